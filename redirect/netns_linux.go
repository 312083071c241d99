package redirect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrThreadLost is wrapped when the thread that entered a pod namespace
// could not return to its own; that thread is left locked and exits with
// its goroutine, so no other goroutine ever runs in the wrong namespace.
var ErrThreadLost = errors.New("redirect: could not restore the thread's network namespace")

// inNetns runs fn on a fresh goroutine locked to its OS thread inside the
// network namespace ns, and waits for it. The thread returns to its original
// namespace and is unlocked only if that succeeded; otherwise it stays
// locked and the Go runtime terminates it when the goroutine exits.
func inNetns(ns *os.File, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("redirect: open own netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			// Still in the original namespace: safe to unlock.
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("redirect: enter pod netns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Deliberately no UnlockOSThread: the thread dies with us.
			errc <- errors.Join(ferr, fmt.Errorf("%w: %w", ErrThreadLost, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// netnsCookie returns the kernel's cookie of the namespace ns (what
// bpf_get_netns_cookie returns for sockets in it).
func netnsCookie(ns *os.File) (uint64, error) {
	var cookie uint64
	err := inNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("redirect: netns cookie: %w", err)
	}
	return cookie, nil
}

// sockopt reads a uint64 socket option of a connection or listener.
func sockopt(c syscall.Conn, opt int) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v uint64
	var serr error
	if err := rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, opt)
	}); err != nil {
		return 0, err
	}
	return v, serr
}

// markControl returns a net.Dialer/ListenConfig Control func setting SO_MARK.
func markControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("redirect: SO_MARK: %w", serr)
		}
		return nil
	}
}

// listenIn creates n marked TCP listeners on ephemeral ports inside ns,
// entering it once. The port does not matter: sk_lookup steers the
// well-known ports to them through the sockmap. Dual-stack when the
// namespace has IPv6.
func listenIn(ctx context.Context, ns *os.File, mark uint32, n int) ([]*net.TCPListener, error) {
	var out []*net.TCPListener
	err := inNetns(ns, func() error {
		lc := net.ListenConfig{Control: markControl(mark)}
		// Go listens with MPTCP by default since 1.24; sockmap (and so
		// sk_lookup) accepts only plain TCP listeners.
		lc.SetMultipathTCP(false)
		for range n {
			ln, err := lc.Listen(ctx, "tcp", "[::]:0")
			if err != nil {
				ln, err = lc.Listen(ctx, "tcp4", "0.0.0.0:0")
			}
			if err != nil {
				for _, l := range out {
					l.Close()
				}
				return err
			}
			out = append(out, ln.(*net.TCPListener))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redirect: listen in pod netns: %w", err)
	}
	return out, nil
}

// dialIn dials from inside ns with a marked socket, which capture ignores.
func dialIn(ctx context.Context, ns *os.File, mark uint32, network, address string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		d := net.Dialer{Control: markControl(mark)}
		d.SetMultipathTCP(false)
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// InNetns runs fn inside the network namespace ns on a short-lived
// goroutine locked to its OS thread, and waits for it (see inNetns for the
// thread-safety rules). Sockets fn creates stay in ns.
func InNetns(ns *os.File, fn func() error) error { return inNetns(ns, fn) }

// ErrNodeNetns is wrapped when a network namespace offered as a pod's is
// the node's (the host namespace the daemon was given) or the daemon's own:
// capturing it would redirect the node's or the daemon's own traffic.
var ErrNodeNetns = errors.New("redirect: not a pod's network namespace")

// CheckPodNetns refuses ns if it is the daemon's own network namespace
// (/proc/self/ns/net) or host's (the node's; nil if not given), compared by
// the namespace's device and inode.
func CheckPodNetns(ns, host *os.File) error {
	var got, self unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &got); err != nil {
		return fmt.Errorf("redirect: stat netns: %w", err)
	}
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return fmt.Errorf("redirect: stat own netns: %w", err)
	}
	if got.Dev == self.Dev && got.Ino == self.Ino {
		return fmt.Errorf("%w: it is the daemon's own network namespace (net:[%d])", ErrNodeNetns, got.Ino)
	}
	if host != nil {
		var h unix.Stat_t
		if err := unix.Fstat(int(host.Fd()), &h); err != nil {
			return fmt.Errorf("redirect: stat host netns: %w", err)
		}
		if got.Dev == h.Dev && got.Ino == h.Ino {
			return fmt.Errorf("%w: it is the host's network namespace (--host-netns, net:[%d])", ErrNodeNetns, got.Ino)
		}
	}
	return nil
}
