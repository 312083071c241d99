package redirect

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sniffer records every frame on a host interface through an AF_PACKET
// socket: the wire as a packet capture on the pod's veth sees it.
type sniffer struct {
	fd   int
	mu   sync.Mutex
	pkts [][]byte
	done chan struct{}
	stop chan struct{}
}

func sniff(t *testing.T, ifname string) *sniffer {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	s := &sniffer{fd: fd, done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.pkts = append(s.pkts, bytes.Clone(buf[:n]))
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *sniffer) close() [][]byte {
	select {
	case <-s.stop:
	default:
		close(s.stop)
		<-s.done
		unix.Close(s.fd)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pkts
}

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

func htons(v uint16) uint16 { return v<<8 | v>>8 }
