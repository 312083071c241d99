package redirect

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Guarantee 1 (and 8): every outbound TCP connect of an enrolled pod, IPv4
// and IPv6, arrives at ambit's outbound listener in the pod netns; ambit
// reads the original destination; the app's getpeername shows the original
// destination; ambit's own marked dial is not captured (the splice works);
// loopback and excluded ports are not captured.
func TestOutboundCapture(t *testing.T) {
	l := newLab(t)
	a, b := l.pod("pod-a", 2), l.pod("pod-b", 3)
	app := b.listen(8080)
	go serveEcho(app, nil)
	other := b.listen(9090) // excluded port: reached directly
	go serveEcho(other, nil)
	local := a.listen(7070) // loopback service inside pod A
	go serveEcho(local, nil)

	m := testManager(t)
	ctx := ctxT(t, 20*time.Second)
	if err := m.Apply(ctx, a.netns(), Config{OutboundExcludePorts: []uint16{9090}}); err != nil {
		t.Fatal(err)
	}
	ls, err := m.Listeners("pod-a")
	if err != nil {
		t.Fatal(err)
	}
	// ambit's side: accept, read the original destination, dial it with a
	// marked socket from inside the pod, splice.
	origs := make(chan netip.AddrPort, 4)
	go func() {
		for {
			c, err := ls.Outbound.Accept()
			if err != nil {
				return
			}
			dst, err := m.OriginalDst(c)
			if err != nil {
				t.Errorf("OriginalDst: %v", err)
				c.Close()
				continue
			}
			origs <- dst
			up, err := m.Dial(ctx, "pod-a", "tcp", dst.String())
			if err != nil {
				t.Errorf("ambit dial %v: %v", dst, err)
				c.Close()
				continue
			}
			go splice(c, up)
		}
	}()

	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(b.v4, 8080), netip.AddrPortFrom(b.v6, 8080)} {
		c, err := a.dial(ctx, dst)
		if err != nil {
			t.Fatalf("app dial %v: %v", dst, err)
		}
		select {
		case got := <-origs:
			if got != dst {
				t.Errorf("original destination %v, want %v", got, dst)
			}
		case <-ctx.Done():
			t.Fatalf("connect to %v never reached the outbound listener", dst)
		}
		if got := peerName(t, c); got != dst {
			t.Errorf("app's getpeername = %v, want %v (rewrite visible)", got, dst)
		}
		// Its own end: the pod's address, not the loopback the rewrite
		// connected from (the port is the socket's own).
		own := a.v4
		if dst.Addr().Is6() {
			own = a.v6
		}
		if got := sockName(t, c); got.Addr() != own || got.Port() == 0 {
			t.Errorf("app's getsockname = %v, want %v:<port> (loopback visible)", got, own)
		}
		if got := c.LocalAddr().(*net.TCPAddr).AddrPort(); got.Addr().Unmap() != own {
			t.Errorf("app's LocalAddr = %v, want %v", got, own)
		}
		if err := roundTrip(c, "hello through ambit"); err != nil {
			t.Errorf("round trip via %v: %v", dst, err)
		}
		c.Close()
	}
	// Not captured: excluded port and loopback.
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(b.v4, 9090), netip.AddrPortFrom(b.v6, 9090),
		netip.MustParseAddrPort("127.0.0.1:7070"), netip.MustParseAddrPort("[::1]:7070")} {
		c, err := a.dial(ctx, dst)
		if err != nil {
			t.Fatalf("dial %v: %v", dst, err)
		}
		if err := roundTrip(c, "direct"); err != nil {
			t.Errorf("%v: %v", dst, err)
		}
		c.Close()
	}
	select {
	case got := <-origs:
		t.Errorf("uncaptured destination reached the outbound listener: %v", got)
	case <-time.After(200 * time.Millisecond):
	}
}

// Guarantee 2 (and 8): inbound TCP to the pod's addresses lands on 15006,
// to 15008 on the HBONE listener, with the original destination as the
// accepted socket's local address; ambit's own dial to the app from inside
// the pod reaches the app, not 15006 again.
func TestInboundCapture(t *testing.T) {
	l := newLab(t)
	a, b := l.pod("pod-a", 2), l.pod("pod-b", 3)
	app := b.listen(8080)
	appSeen := make(chan string, 8)
	go serveEcho(app, appSeen)

	m := testManager(t)
	ctx := ctxT(t, 20*time.Second)
	if err := m.Apply(ctx, b.netns(), Config{}); err != nil {
		t.Fatal(err)
	}
	ls, _ := m.Listeners("pod-b")
	inbound, hbone := make(chan string, 8), make(chan string, 8)
	go serveLocal(ls.Inbound, inbound)
	go serveLocal(ls.HBONE, hbone)

	for _, ip := range []netip.Addr{b.v4, b.v6} {
		for port, want := range map[uint16]chan string{8080: inbound, 15008: hbone, 15006: inbound} {
			dst := netip.AddrPortFrom(ip, port)
			c, err := a.dial(ctx, dst)
			if err != nil {
				t.Fatalf("dial %v: %v", dst, err)
			}
			select {
			case got := <-want:
				if got != dst.String() {
					t.Errorf("accepted with local address %s, want %v", got, dst)
				}
			case <-ctx.Done():
				t.Fatalf("%v did not reach the expected listener", dst)
			}
			c.Close()
		}
		// ambit's server side dials the app with its marked socket.
		c, err := m.Dial(ctx, "pod-b", "tcp", netip.AddrPortFrom(ip, 8080).String())
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(c, "to the app"); err != nil {
			t.Errorf("ambit -> app %v: %v", ip, err)
		}
		c.Close()
		if got := <-appSeen; got != netip.AddrPortFrom(ip, 8080).String() {
			t.Errorf("app accepted on %s", got)
		}
	}
	select {
	case got := <-appSeen:
		t.Errorf("app accepted a connection that should have been captured (%s)", got)
	default:
	}
}

// serveLocal reports each accepted connection's local address and closes it.
func serveLocal(ln net.Listener, seen chan<- string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		seen <- c.LocalAddr().String()
		c.Close()
	}
}

func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}

func peerName(t *testing.T, c net.Conn) netip.AddrPort {
	t.Helper()
	return sockAddr(t, c, unix.Getpeername)
}

// sockName is the app's getsockname of c (a fresh call, not Go's cached
// LocalAddr).
func sockName(t *testing.T, c net.Conn) netip.AddrPort {
	t.Helper()
	return sockAddr(t, c, unix.Getsockname)
}

func sockAddr(t *testing.T, c net.Conn, get func(int) (unix.Sockaddr, error)) netip.AddrPort {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sa unix.Sockaddr
	var serr error
	rc.Control(func(fd uintptr) { sa, serr = get(int(fd)) })
	if serr != nil {
		t.Fatal(serr)
	}
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(s.Addr).Unmap(), uint16(s.Port))
	}
	t.Fatal(errors.New("unknown sockaddr"))
	return netip.AddrPort{}
}
