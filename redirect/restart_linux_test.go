package redirect

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// server accepts on ln and echoes; during drain it stops once the accept
// queue stays empty for a while.
type server struct {
	ln       *net.TCPListener
	accepted atomic.Int64
	draining atomic.Bool
	done     chan struct{}
	conns    sync.WaitGroup
}

func serve(ln net.Listener) *server {
	s := &server{ln: ln.(*net.TCPListener), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := s.ln.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && s.draining.Load() {
					return
				}
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			s.accepted.Add(1)
			if s.draining.Load() {
				s.ln.SetDeadline(time.Now().Add(200 * time.Millisecond))
			}
			s.conns.Add(1)
			go func() {
				defer s.conns.Done()
				defer c.Close()
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
	return s
}

// drain waits until no connection arrived for 200 ms.
func (s *server) drain() {
	s.draining.Store(true)
	s.ln.SetDeadline(time.Now().Add(200 * time.Millisecond))
	<-s.done
}

// Guarantee 7: a second Manager (another daemon instance sharing only the
// pins and state directory with the first; both in this test process)
// recovers the enrolled pod and swaps its listeners into the pinned
// sockmap while a client connects continuously: no connection fails; the
// old instance drains, closes, and its live connection keeps working.
func TestTakeoverRefusesNothing(t *testing.T) {
	l := newLab(t)
	b, c := l.pod("pod-b", 3), l.pod("pod-c", 4)
	pinDir, stateDir := filepath.Join(mountBPFFS(t), "ambit"), t.TempDir()
	ctx := ctxT(t, 60*time.Second)

	m1 := newManager(t, pinDir, stateDir)
	if err := m1.Apply(ctx, b.netns(), Config{}); err != nil {
		t.Fatal(err)
	}
	ls1, _ := m1.Listeners("pod-b")
	s1 := serve(ls1.Inbound)

	long, err := c.dial(ctx, netip.AddrPortFrom(b.v4, 8080))
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	if err := roundTrip(long, "long-lived before"); err != nil {
		t.Fatal(err)
	}

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for _, ip := range []netip.Addr{b.v4, b.v6} {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				conn, err := c.dial(dctx, netip.AddrPortFrom(ip, 8080))
				cancel()
				if err == nil {
					err = roundTrip(conn, "ping")
					conn.Close()
				}
				if err != nil {
					failed.Add(1)
					t.Logf("client %v: %v", ip, err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)

	m2 := newManager(t, pinDir, stateDir)
	t.Cleanup(func() { m2.Uninstall(context.Background()) })
	// What a successor prepares for, read before anything moves.
	if rec, err := m2.Recorded(); err != nil || len(rec) != 1 || rec[0].ID != "pod-b" || len(rec[0].Addresses) == 0 {
		t.Fatalf("recorded: %v %v", rec, err)
	}
	got, err := m2.Recover(ctx)
	if err != nil || len(got) != 1 || got[0].ID != "pod-b" {
		t.Fatalf("recover: %v %v", got, err)
	}
	ls2, _ := m2.Listeners("pod-b")
	s2 := serve(ls2.Inbound)
	time.Sleep(300 * time.Millisecond)
	before := s1.accepted.Load()
	s1.drain()
	m1.Close()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	clients.Wait()

	if failed.Load() != 0 {
		t.Errorf("%d of %d connections failed during the takeover", failed.Load(), failed.Load()+ok.Load())
	}
	if before == 0 || s2.accepted.Load() == 0 {
		t.Errorf("old served %d, new served %d: both should have served", before, s2.accepted.Load())
	}
	if err := roundTrip(long, "long-lived after"); err != nil {
		t.Errorf("live connection of the old instance: %v", err)
	}
	if st := state(t, m2); !strings.Contains(st, "listener inbound this-process") {
		t.Errorf("new instance state:\n%s", st)
	}
	long.Close()
	s1.conns.Wait()
	t.Logf("%d connections, old instance %d, new instance %d", ok.Load(), s1.accepted.Load(), s2.accepted.Load())
	m2.Close()
	<-s2.done
}

// Guarantee 7, restart after a crash: a daemon process enrols a pod and is
// SIGKILLed; a new Manager recovers it from the pins and state directory
// and the pod's outbound capture works again through the new listener.
func TestRecoverAfterKill(t *testing.T) {
	l := newLab(t)
	a, b := l.pod("pod-a", 2), l.pod("pod-b", 3)
	app := b.listen(8080)
	go serveEcho(app, nil)
	pinDir, stateDir := filepath.Join(mountBPFFS(t), "ambit"), t.TempDir()
	kill := startHelper(t, helperSpec{PinDir: pinDir, StateDir: stateDir, Pods: []PodNetns{a.netns()}, Configs: []Config{{}}})
	kill()
	ctx := ctxT(t, 20*time.Second)
	dst := netip.AddrPortFrom(b.v4, 8080)
	if c, err := a.dial(ctx, dst); err == nil {
		c.Close()
		t.Fatal("connect succeeded with the daemon dead")
	}
	m := newManager(t, pinDir, stateDir)
	t.Cleanup(func() { m.Uninstall(context.Background()) })
	if got, err := m.Recover(ctx); err != nil || len(got) != 1 {
		t.Fatalf("recover: %v %v", got, err)
	}
	ls, _ := m.Listeners("pod-a")
	accepted := make(chan netip.AddrPort, 1)
	go func() {
		c, err := ls.Outbound.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		d, err := m.OriginalDst(c)
		if err != nil {
			t.Error(err)
		}
		accepted <- d
	}()
	conn, err := a.dial(ctx, dst)
	if err != nil {
		t.Fatalf("after recover: %v", err)
	}
	defer conn.Close()
	select {
	case d := <-accepted:
		if d != dst {
			t.Errorf("original destination %v, want %v", d, dst)
		}
	case <-ctx.Done():
		t.Fatal("not captured after recover")
	}
}

// An upgrade brings its programs along: a new Manager updates the pinned
// node-wide links in place, and Recover reloads the programs of a pod whose
// state was written by a build with other programs.
func TestUpgradeReplacesPrograms(t *testing.T) {
	l := newLab(t)
	a := l.pod("pod-a", 2)
	pinDir, stateDir := filepath.Join(mountBPFFS(t), "ambit"), t.TempDir()
	ctx := ctxT(t, 20*time.Second)
	m1 := newManager(t, pinDir, stateDir)
	if err := m1.Apply(ctx, a.netns(), Config{}); err != nil {
		t.Fatal(err)
	}
	globalID := func(m *Manager) ebpf.ProgramID {
		lk, err := link.LoadPinnedLink(m.globalPin("connect4"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer lk.Close()
		info, _ := lk.Info()
		return info.Program
	}
	g1, p1 := globalID(m1), progIDs(t, m1, "pod-a")
	m1.Close()
	// Pretend the pod was enrolled by another build.
	st, err := (&Manager{opts: Options{StateDir: stateDir}}).readState("pod-a")
	if err != nil || st == nil {
		t.Fatal(err)
	}
	st.Programs = "older-build"
	if err := (&Manager{opts: Options{StateDir: stateDir}}).writeState(st); err != nil {
		t.Fatal(err)
	}
	m2 := newManager(t, pinDir, stateDir)
	t.Cleanup(func() { m2.Uninstall(context.Background()) })
	if _, err := m2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if g2 := globalID(m2); g2 == g1 {
		t.Error("node-wide programs not replaced by the new manager")
	}
	if p2 := progIDs(t, m2, "pod-a"); slices.Equal(p1, p2) {
		t.Error("pod programs of an older build not replaced on recover")
	}
	if st := state(t, m2); !strings.Contains(st, "link lookup attached") || !strings.Contains(st, "connect4 attached") {
		t.Errorf("state after upgrade:\n%s", st)
	}
}

// During a surge upgrade or a deleted daemon pod's handover two daemon
// processes enrol pods at once: the old one serves CNI ADDs until the
// successor's socket binds, the successor after. Each process's Manager was
// created before the other's pod existed. They must never hand out the same
// listener slot: the second pod's listeners would replace the first's in
// the node-wide sockmap and the first pod's connections would be dropped
// (seen in the cluster: a pod created during `helm upgrade` had every
// connection time out).
func TestOverlappingManagersNeverShareASlot(t *testing.T) {
	l := newLab(t)
	b, c, x := l.pod("pod-b", 3), l.pod("pod-c", 4), l.pod("pod-x", 6) // x: not enrolled, the client
	pinDir, stateDir := filepath.Join(mountBPFFS(t), "ambit"), t.TempDir()
	ctx := ctxT(t, 30*time.Second)

	old := newManager(t, pinDir, stateDir)
	succ := newManager(t, pinDir, stateDir)
	t.Cleanup(func() { succ.Uninstall(context.Background()) })
	if err := old.Apply(ctx, b.netns(), Config{}); err != nil {
		t.Fatal(err)
	}
	if err := succ.Apply(ctx, c.netns(), Config{}); err != nil {
		t.Fatal(err)
	}
	sb, err := old.readState("pod-b")
	if err != nil || sb == nil {
		t.Fatalf("state of pod-b: %v %v", sb, err)
	}
	sc, err := succ.readState("pod-c")
	if err != nil || sc == nil {
		t.Fatalf("state of pod-c: %v %v", sc, err)
	}
	if sb.Slot == sc.Slot {
		t.Fatalf("both pods got listener slot %d", sb.Slot)
	}

	// Each pod's inbound connections reach its own Manager's listener.
	lb, _ := old.Listeners("pod-b")
	lc, _ := succ.Listeners("pod-c")
	sB, sC := serve(lb.Inbound), serve(lc.Inbound)
	for _, tc := range []struct {
		to  *testPod
		srv *server
	}{{b, sB}, {c, sC}} {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := x.dial(dctx, netip.AddrPortFrom(tc.to.v4, 8080))
		cancel()
		if err != nil {
			t.Fatalf("connect to %s: %v", tc.to.name, err)
		}
		if err := roundTrip(conn, "hello "+tc.to.name); err != nil {
			t.Errorf("to %s: %v", tc.to.name, err)
		}
		conn.Close()
		if tc.srv.accepted.Load() != 1 {
			t.Errorf("%s's listener accepted %d connections, want 1", tc.to.name, tc.srv.accepted.Load())
		}
	}

	// Released by one process, the slot is free for the other.
	if err := old.Remove(ctx, b.netns()); err != nil {
		t.Fatal(err)
	}
	d := l.pod("pod-d", 5)
	if err := succ.Apply(ctx, d.netns(), Config{}); err != nil {
		t.Fatal(err)
	}
	if sd, err := succ.readState("pod-d"); err != nil || sd == nil || sd.Slot != sb.Slot {
		t.Errorf("pod-d got %+v (%v), want the released slot %d", sd, err, sb.Slot)
	}
	old.Close()
	sB.drain()
	sC.drain()
}

// A predecessor enrolled a pod at its CNI ADD (capture ID: the container)
// after this process had recovered; this process then finds the pod
// running and enrols it under another ID (its namespace's). The namespace
// must end up with one capture, this process's: two would attach two
// inbound programs, and the predecessor's slot empties when it exits
// (seen in the cluster: a pod created during `helm upgrade` timed out on
// every connection).
func TestSameNamespaceUnderAnotherIDIsTakenOver(t *testing.T) {
	l := newLab(t)
	b, x := l.pod("pod-b", 3), l.pod("pod-x", 6) // x: not enrolled, the client
	pinDir, stateDir := filepath.Join(mountBPFFS(t), "ambit"), t.TempDir()
	ctx := ctxT(t, 30*time.Second)

	old := newManager(t, pinDir, stateDir)
	succ := newManager(t, pinDir, stateDir)
	t.Cleanup(func() { succ.Uninstall(context.Background()) })
	byCNI := b.netns()
	byCNI.ID = "container-b"
	if err := old.Apply(ctx, byCNI, Config{}); err != nil {
		t.Fatal(err)
	}
	was, err := old.readState("container-b")
	if err != nil || was == nil {
		t.Fatalf("state: %v %v", was, err)
	}
	running := b.netns()
	running.ID = "netns-b"
	if err := succ.Apply(ctx, running, Config{}); err != nil {
		t.Fatal(err)
	}
	ids, err := succ.stateIDs()
	if err != nil || !slices.Equal(ids, []string{"netns-b"}) {
		t.Fatalf("recorded captures %v (%v), want only netns-b", ids, err)
	}
	now, err := succ.readState("netns-b")
	if err != nil || now == nil || now.Slot != was.Slot {
		t.Fatalf("netns-b: %+v (%v), want the slot %d it was captured with", now, err, was.Slot)
	}
	old.Close() // the predecessor exits: its listeners leave the sockmap
	ls, err := succ.Listeners("netns-b")
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(ls.Inbound)
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conn, err := x.dial(dctx, netip.AddrPortFrom(b.v4, 8080))
	cancel()
	if err != nil {
		t.Fatalf("connect after the predecessor exited: %v", err)
	}
	if err := roundTrip(conn, "hello"); err != nil {
		t.Errorf("after the predecessor exited: %v", err)
	}
	conn.Close()
	if srv.accepted.Load() != 1 {
		t.Errorf("this process's listener accepted %d connections, want 1", srv.accepted.Load())
	}
	srv.drain()
	if st := state(t, succ); strings.Count(st, "sk_lookup") > 1 {
		t.Errorf("more than one inbound program recorded:\n%s", st)
	}
}

// Once a successor has begun taking the node over, the predecessor
// captures no new pod (its CNI ADD fails and the runtime retries it on the
// successor), while what it already captured stays its own until taken
// over.
func TestPredecessorCapturesNoNewPodAfterBeginTakeover(t *testing.T) {
	l := newLab(t)
	b, c := l.pod("pod-b", 3), l.pod("pod-c", 4)
	pinDir, stateDir := filepath.Join(mountBPFFS(t), "ambit"), t.TempDir()
	ctx := ctxT(t, 30*time.Second)

	old := newManager(t, pinDir, stateDir)
	defer old.Close()
	if err := old.Apply(ctx, b.netns(), Config{}); err != nil {
		t.Fatal(err)
	}
	succ := newManager(t, pinDir, stateDir)
	t.Cleanup(func() { succ.Uninstall(context.Background()) })
	rec, err := succ.BeginTakeover()
	if err != nil || len(rec) != 1 || rec[0].ID != "pod-b" {
		t.Fatalf("BeginTakeover: %v %v, want pod-b recorded", rec, err)
	}
	if err := old.Apply(ctx, c.netns(), Config{}); !errors.Is(err, ErrHandedOver) {
		t.Fatalf("predecessor's Apply of a new pod after BeginTakeover: %v, want ErrHandedOver", err)
	}
	if ids, _ := succ.stateIDs(); !slices.Equal(ids, []string{"pod-b"}) {
		t.Errorf("recorded after the refused Apply: %v, want only pod-b (nothing half made)", ids)
	}
	if err := old.Apply(ctx, b.netns(), Config{}); err != nil {
		t.Errorf("predecessor re-applying a pod it holds: %v", err)
	}
	if err := succ.Apply(ctx, c.netns(), Config{}); err != nil {
		t.Errorf("successor's Apply of the new pod: %v", err)
	}
}
