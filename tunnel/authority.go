package tunnel

import (
	"fmt"
	"net/netip"
)

// maxAuthorityLen bounds the CONNECT authority: the longest valid form is a
// bracketed IPv6 address without zone and a 5-digit port (47 bytes).
const maxAuthorityLen = 64

// ParseAuthority parses a CONNECT :authority as HBONE uses it: an IP
// literal and a port, IPv6 in brackets ("10.0.0.1:8080", "[fd00::1]:8080").
// Host names, zones, IPv4-mapped IPv6 addresses, port 0 and anything longer
// than a valid form are rejected with an error wrapping ErrBadRequest. The
// input is untrusted.
func ParseAuthority(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, fmt.Errorf("%w: empty authority", ErrBadRequest)
	}
	if len(s) > maxAuthorityLen {
		return netip.AddrPort{}, fmt.Errorf("%w: authority longer than %d bytes", ErrBadRequest, maxAuthorityLen)
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: authority %q is not IP:port", ErrBadRequest, s)
	}
	a := ap.Addr()
	switch {
	case a.Zone() != "":
		return netip.AddrPort{}, fmt.Errorf("%w: authority %q has an IPv6 zone", ErrBadRequest, s)
	case a.Is4In6():
		return netip.AddrPort{}, fmt.Errorf("%w: authority %q is an IPv4-mapped IPv6 address", ErrBadRequest, s)
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("%w: authority %q has port 0", ErrBadRequest, s)
	case a.IsUnspecified() || a.IsMulticast():
		return netip.AddrPort{}, fmt.Errorf("%w: authority %q is not a unicast address", ErrBadRequest, s)
	}
	return ap, nil
}

// FormatAuthority renders a destination as a CONNECT authority (IPv6 in
// brackets). It is the inverse of ParseAuthority for valid destinations.
func FormatAuthority(ap netip.AddrPort) string { return ap.String() }
