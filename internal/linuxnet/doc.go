// Package linuxnet configures Linux networking for a CoderVPN tunnel, the
// part of a Linux host's manager role that touches the system: it creates
// the TUN device, and a Configurator applies the tunnel's
// NetworkSettingsRequests to the kernel (addresses, routes, MTU, link state
// through netlink; an excluded route inside the tunnel's routes keeps the
// path it had before them) and to the resolver (systemd-resolved over D-Bus), and
// undoes all of it on teardown.
//
// Every kernel operation goes through a netlink handle the caller may bind to
// another network namespace, so a demo or a test can configure a TUN that lives
// in a private namespace while the tunnel process stays in the root one.
//
// The package only builds on Linux; this file exists so that the package
// (and its documentation) exists on every platform.
package linuxnet
