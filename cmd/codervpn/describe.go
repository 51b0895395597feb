package main

import (
	"fmt"
	"strings"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// describeSettings says in one line what a NetworkSettingsRequest asks for.
func describeSettings(ns *vpnpb.NetworkSettingsRequest) string {
	var parts []string
	add := func(label string, vals []string) {
		if len(vals) > 0 {
			parts = append(parts, label+" "+strings.Join(vals, ", "))
		}
	}
	var addrs, routes []string
	v4, v6 := ns.GetIpv4Settings(), ns.GetIpv6Settings()
	for _, a := range v4.GetAddrs() {
		addrs = append(addrs, a)
	}
	for i, a := range v6.GetAddrs() {
		if pl := v6.GetPrefixLengths(); i < len(pl) {
			a = fmt.Sprintf("%s/%d", a, pl[i])
		}
		addrs = append(addrs, a)
	}
	for _, r := range v4.GetIncludedRoutes() {
		routes = append(routes, r.GetDestination()+"/"+r.GetMask())
	}
	for _, r := range v6.GetIncludedRoutes() {
		routes = append(routes, fmt.Sprintf("%s/%d", r.GetDestination(), r.GetPrefixLength()))
	}
	add("address", addrs)
	add("route", routes)
	if ns.GetMtu() != 0 {
		parts = append(parts, fmt.Sprintf("MTU %d", ns.GetMtu()))
	}
	if d := ns.GetDnsSettings(); d != nil {
		if len(d.GetServers()) == 0 {
			parts = append(parts, "no DNS")
		} else {
			dns := "DNS " + strings.Join(d.GetServers(), ", ")
			if md := d.GetMatchDomains(); len(md) > 0 {
				dns += " for ." + strings.Join(md, ", .")
			}
			parts = append(parts, dns)
		}
	}
	if len(parts) == 0 {
		return "nothing to change"
	}
	return strings.Join(parts, "; ")
}

func describePeerUpdate(u *vpnpb.PeerUpdate) string {
	return fmt.Sprintf("%d workspaces, %d agents", len(u.GetUpsertedWorkspaces()), len(u.GetUpsertedAgents()))
}
