package nstest

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Sniffer records every frame on a host interface through an AF_PACKET
// socket: the wire as a packet capture on a pod's veth sees it.
type Sniffer struct {
	fd   int
	mu   sync.Mutex
	pkts [][]byte
	done chan struct{}
	stop chan struct{}
}

// Sniff starts capturing on ifname until Close or the end of the test.
func Sniff(t testing.TB, ifname string) *Sniffer {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	all := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(all))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: all, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	s := &Sniffer{fd: fd, done: make(chan struct{}), stop: make(chan struct{})}
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
			if err != nil || n <= 0 {
				continue
			}
			s.mu.Lock()
			s.pkts = append(s.pkts, bytes.Clone(buf[:n]))
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { s.Close() })
	return s
}

// Close stops the capture (once) and returns every frame seen.
func (s *Sniffer) Close() [][]byte {
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

// htons converts to network byte order, as AF_PACKET protocols are given.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
