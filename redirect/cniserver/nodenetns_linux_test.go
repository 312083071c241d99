package cniserver

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/redirect/cnimsg"
	"github.com/ambit-mesh/ambit/redirect/nstest"
	"golang.org/x/sys/unix"
)

type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRefusesNodeNetns: an ADD or CHECK offering the daemon's own network
// namespace, or the node's (the --host-netns file, here a namespace of the
// test's own), is refused with an error naming it, a log line and a
// counter, and capture is never applied to it; a pod's namespace still
// works.
func TestRefusesNodeNetns(t *testing.T) {
	nstest.NeedRoot(t)
	host, hostPath := nstest.NewNetns(t, t.TempDir(), "node")
	pod, podPath := nstest.NewNetns(t, t.TempDir(), "pod")
	self, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	f := &fakeEnroller{enrol: true}
	logs := &lockedLog{}
	sock := filepath.Join(t.TempDir(), "cni.sock")
	srv, err := New(Options{SocketPath: sock, Enroller: f, Timeout: 2 * time.Second, HostNetns: host,
		HostPeer: func(*os.File, string) (string, error) { return "", os.ErrNotExist },
		Logger:   slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// A second handle on the host namespace, by another path (a bind
	// mount elsewhere): compared by inode, not by name.
	again := filepath.Join(t.TempDir(), "again")
	if err := os.WriteFile(again, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(hostPath, again, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(again, unix.MNT_DETACH)
	hostAgain, err := os.Open(again)
	if err != nil {
		t.Fatal(err)
	}
	defer hostAgain.Close()

	for _, c := range []struct {
		name, path string
		ns         *os.File
		op         string
		want       string
	}{
		{"daemon's own, ADD", "/proc/self/ns/net", self, cnimsg.OpAdd, "daemon's own network namespace"},
		{"daemon's own, CHECK", "/proc/self/ns/net", self, cnimsg.OpCheck, "daemon's own network namespace"},
		{"host's, ADD", hostPath, host, cnimsg.OpAdd, "host's network namespace"},
		{"host's by another path", again, hostAgain, cnimsg.OpAdd, "host's network namespace"},
	} {
		req := addReq(c.path)
		req.Op = c.op
		b, err := cnimsg.Encode(cnimsg.TypeRequest, req)
		if err != nil {
			t.Fatal(err)
		}
		r := send(t, sock, b, c.ns)
		if r.OK || !strings.Contains(r.Error, c.want) || !strings.Contains(r.Error, "shop/web") {
			t.Errorf("%s: %+v, want an error naming the pod and %q", c.name, r, c.want)
		}
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("enroller called %d times for the node's or the daemon's namespace", n)
	}
	if st := srv.Stats(); st.NodeNetns != 4 || st.Rejected != 4 || st.Added != 0 {
		t.Fatalf("stats %+v, want 4 refused for the node's namespace", st)
	}
	if n := strings.Count(logs.String(), "cni request rejected"); n != 4 || !strings.Contains(logs.String(), "host's network namespace") {
		t.Fatalf("%d rejection log lines, want 4:\n%s", n, logs.String())
	}
	b, _ := cnimsg.Encode(cnimsg.TypeRequest, addReq(podPath))
	if r := send(t, sock, b, pod); !r.OK || !r.Enrolled || f.calls.Load() != 1 {
		t.Fatalf("a pod's own namespace: %+v, calls %d", r, f.calls.Load())
	}
}
