//go:build !linux

package coderd

import (
	"errors"
	"net/netip"
)

// lookupRoute is Linux-only for now: elsewhere the route watch stays
// silent.
func lookupRoute(netip.Addr) (route, error) { return route{}, errors.ErrUnsupported }
