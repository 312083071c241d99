package redirect

import (
	"bytes"
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// tcpTo counts TCP segments to port in frames, and whether any frame
// carries marker.
func tcpTo(frames [][]byte, port uint16, marker []byte) (segments int, sawMarker bool) {
	for _, f := range frames {
		if bytes.Contains(f, marker) {
			sawMarker = true
		}
		if len(f) < 14 {
			continue
		}
		var l4 []byte
		switch binary.BigEndian.Uint16(f[12:14]) {
		case unix.ETH_P_IP:
			if len(f) < 34 || f[23] != unix.IPPROTO_TCP {
				continue
			}
			l4 = f[14+int(f[14]&0xf)*4:]
		case unix.ETH_P_IPV6:
			if len(f) < 54 || f[20] != unix.IPPROTO_TCP {
				continue
			}
			l4 = f[54:]
		default:
			continue
		}
		if len(l4) >= 4 && binary.BigEndian.Uint16(l4[2:4]) == port {
			segments++
		}
	}
	return segments, sawMarker
}
