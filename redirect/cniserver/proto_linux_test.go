package cniserver

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/redirect/cnimsg"
	"github.com/ambit-mesh/ambit/redirect/nstest"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeEnroller records calls; bad input must never reach it.
type fakeEnroller struct {
	calls atomic.Int64
	enrol bool
}

func (f *fakeEnroller) Add(context.Context, Pod) (bool, error) {
	f.calls.Add(1)
	return f.enrol, nil
}
func (f *fakeEnroller) Check(context.Context, Pod) (bool, error) {
	f.calls.Add(1)
	return f.enrol, nil
}
func (f *fakeEnroller) Del(context.Context, string) error { f.calls.Add(1); return nil }

func startFake(t *testing.T, uid uint32) (*Server, *fakeEnroller, string) {
	t.Helper()
	f := &fakeEnroller{enrol: true}
	sock := filepath.Join(t.TempDir(), "cni.sock")
	srv, err := New(Options{SocketPath: sock, Enroller: f, AllowUID: uid, Timeout: 2 * time.Second,
		HostPeer: func(*os.File, string) (string, error) { return "", os.ErrNotExist },
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, f, sock
}

// send writes raw bytes (and optional descriptors) and returns the answer.
func send(t *testing.T, sock string, b []byte, files ...*os.File) cnimsg.Response {
	t.Helper()
	c, err := net.Dial("unixpacket", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var oob []byte
	for _, f := range files {
		oob = append(oob, unix.UnixRights(int(f.Fd()))...)
	}
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := uc.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, cnimsg.HeaderLen+cnimsg.MaxPayload)
	n, err := uc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r cnimsg.Response
	if err := cnimsg.Read(strings.NewReader(string(buf[:n])), cnimsg.TypeResponse, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func addReq(path string) cnimsg.Request {
	return cnimsg.Request{Op: cnimsg.OpAdd, Pod: cnimsg.Pod{Namespace: "shop", Name: "web", ContainerID: "abc", Interface: "eth0",
		NetnsPath: path, IPs: []netip.Addr{netip.MustParseAddr("10.9.0.2")}}}
}

// Malformed, oversized, wrong-version, out-of-order, descriptor-less,
// wrong-descriptor and unauthenticated requests get an error answer and
// change nothing.
func TestRejects(t *testing.T) {
	nstest.NeedRoot(t)
	srv, f, sock := startFake(t, 0)
	ns, path := nstest.NewNetns(t, t.TempDir(), "pod")
	other, _ := nstest.NewNetns(t, t.TempDir(), "other")
	good, _ := cnimsg.Encode(cnimsg.TypeRequest, addReq(path))
	resp, _ := cnimsg.Encode(cnimsg.TypeResponse, cnimsg.Response{OK: true})
	v2 := append([]byte{}, good...)
	binary.BigEndian.PutUint16(v2[4:], 2)
	huge := make([]byte, cnimsg.HeaderLen+cnimsg.MaxPayload+100)
	copy(huge, good[:cnimsg.HeaderLen])
	binary.BigEndian.PutUint32(huge[8:], cnimsg.MaxPayload+100)
	notNS, _ := os.Open("/dev/null")
	defer notNS.Close()
	cases := []struct {
		name  string
		b     []byte
		files []*os.File
		want  string
	}{
		{"garbage", []byte("hello"), []*os.File{ns}, "malformed"},
		{"version 2", v2, []*os.File{ns}, "version"},
		{"oversized", huge, []*os.File{ns}, "too large"},
		{"response first", resp, nil, "unexpected"},
		{"no descriptor", good, nil, "exactly one"},
		{"two descriptors", good, []*os.File{ns, ns}, "exactly one"},
		{"not a netns", good, []*os.File{notNS}, "not a namespace"},
		{"other netns", good, []*os.File{other}, "not the namespace"},
	}
	for _, c := range cases {
		r := send(t, sock, c.b, c.files...)
		if r.OK || !strings.Contains(r.Error, c.want) {
			t.Errorf("%s: %+v, want error containing %q", c.name, r, c.want)
		}
	}
	if f.calls.Load() != 0 {
		t.Errorf("enroller called %d times on bad input", f.calls.Load())
	}
	if s := srv.Stats(); s.Rejected != int64(len(cases)) {
		t.Errorf("rejected %d, want %d", s.Rejected, len(cases))
	}
	// The good request then works.
	if r := send(t, sock, good, ns); !r.OK || !r.Enrolled || f.calls.Load() != 1 {
		t.Errorf("good request: %+v, calls %d", r, f.calls.Load())
	}
}

func TestRejectsOtherUID(t *testing.T) {
	nstest.NeedRoot(t)
	srv, f, sock := startFake(t, 4242) // only uid 4242 allowed; we are root
	ns, path := nstest.NewNetns(t, t.TempDir(), "pod")
	good, _ := cnimsg.Encode(cnimsg.TypeRequest, addReq(path))
	r := send(t, sock, good, ns)
	if r.OK || !strings.Contains(r.Error, "not allowed") {
		t.Errorf("got %+v", r)
	}
	if f.calls.Load() != 0 || srv.Stats().Rejected != 1 {
		t.Errorf("calls %d stats %+v", f.calls.Load(), srv.Stats())
	}
}

// TestSuccessorKeepsSocket: a second server on the same path (the new daemon
// of a rolling upgrade) takes the path over, and closing the first one
// leaves the successor's socket in place and answering.
func TestSuccessorKeepsSocket(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: SO_PEERCRED must match uid 0")
	}
	first, _, sock := startFake(t, 0)
	second, err := New(Options{SocketPath: sock, Enroller: &fakeEnroller{enrol: false}, Timeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { second.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the predecessor's Close removed the socket path: %v", err)
	}
	ns, path := nstest.NewNetns(t, t.TempDir(), "pod")
	b, err := cnimsg.Encode(cnimsg.TypeRequest, addReq(path))
	if err != nil {
		t.Fatal(err)
	}
	if r := send(t, sock, b, ns); !r.OK || r.Enrolled {
		t.Fatalf("successor answered %+v, want OK and not enrolled", r)
	}
}
