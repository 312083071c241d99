package cniserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/redirect"
	"github.com/ambit-mesh/ambit/redirect/cnimsg"
	"golang.org/x/sys/unix"
)

// Server serves the CNI socket.
type Server struct {
	opts                                                   Options
	log                                                    *slog.Logger
	ln                                                     *net.UnixListener
	wg                                                     sync.WaitGroup
	added, deleted, checked, notEnrolled, rejected, failed atomic.Int64
	nodeNetns                                              atomic.Int64
}

// New validates opts and listens on SocketPath (replacing a stale socket).
func New(opts Options) (*Server, error) {
	if opts.SocketPath == "" || opts.Enroller == nil {
		return nil, errors.New("cniserver: SocketPath and Enroller are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.HostPeer == nil {
		opts.HostPeer = redirect.HostPeer
	}
	os.Remove(opts.SocketPath)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: opts.SocketPath, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("cniserver: %w", err)
	}
	// Never unlink the path on Close: during a rolling upgrade the new
	// daemon binds the same path while the old one still runs, and the old
	// one's Close would otherwise delete the new one's socket, failing every
	// later CNI ADD on the node.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(opts.SocketPath, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("cniserver: %w", err)
	}
	return &Server{opts: opts, log: opts.Logger, ln: ln}, nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Added: s.added.Load(), Deleted: s.deleted.Load(), Checked: s.checked.Load(),
		NotEnrolled: s.notEnrolled.Load(), Rejected: s.rejected.Load(), Failed: s.failed.Load(),
		NodeNetns: s.nodeNetns.Load()}
}

// Serve accepts connections until ctx is done or Close is called, then
// waits for the requests in flight.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("cniserver: accept: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(ctx, c)
		}()
	}
}

// Close stops accepting.
func (s *Server) Close() error { return s.ln.Close() }

// rejectErr marks errors that come from the peer's input, not from us.
type rejectErr struct{ error }

func (s *Server) handle(ctx context.Context, c *net.UnixConn) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	c.SetDeadline(time.Now().Add(s.opts.Timeout))
	resp, err := s.serveOne(ctx, c)
	if err != nil {
		var rej rejectErr
		if errors.As(err, &rej) {
			s.rejected.Add(1)
			s.log.Warn("cni request rejected", "err", err)
		} else {
			s.failed.Add(1)
			s.log.Error("cni request failed", "err", err)
		}
		resp = cnimsg.Response{OK: false, Error: err.Error()}
	}
	b, err := cnimsg.Encode(cnimsg.TypeResponse, resp)
	if err == nil {
		_, err = c.Write(b)
	}
	if err != nil {
		s.log.Warn("cni response not delivered", "err", err)
	}
}

func (s *Server) serveOne(ctx context.Context, c *net.UnixConn) (cnimsg.Response, error) {
	// The request is read (bounded) before the peer check only so that the
	// peer gets an answer instead of a broken pipe; nothing in it is used
	// until the peer is authenticated.
	buf := make([]byte, cnimsg.HeaderLen+cnimsg.MaxPayload+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return cnimsg.Response{}, rejectErr{fmt.Errorf("read request: %w", err)}
	}
	fds, ferr := parseRights(oob[:oobn])
	defer func() {
		for _, f := range fds {
			f.Close()
		}
	}()
	if err := s.checkPeer(c); err != nil {
		return cnimsg.Response{}, rejectErr{err}
	}
	if ferr != nil {
		return cnimsg.Response{}, rejectErr{ferr}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n > cnimsg.HeaderLen+cnimsg.MaxPayload {
		return cnimsg.Response{}, rejectErr{fmt.Errorf("%w: request truncated", cnimsg.ErrTooLarge)}
	}
	req, err := cnimsg.DecodeRequest(buf[:n])
	if err != nil {
		return cnimsg.Response{}, rejectErr{err}
	}
	log := s.log.With("op", req.Op, "pod", req.Pod.Namespace+"/"+req.Pod.Name, "container", req.Pod.ContainerID)
	switch req.Op {
	case cnimsg.OpDel:
		if len(fds) != 0 {
			return cnimsg.Response{}, rejectErr{errors.New("DEL carries no netns descriptor")}
		}
		if err := s.opts.Enroller.Del(ctx, req.Pod.ContainerID); err != nil {
			return cnimsg.Response{}, fmt.Errorf("release: %w", err)
		}
		s.deleted.Add(1)
		log.Info("pod released")
		return cnimsg.Response{OK: true}, nil
	}
	if len(fds) != 1 {
		return cnimsg.Response{}, rejectErr{fmt.Errorf("%s needs exactly one netns descriptor, got %d", req.Op, len(fds))}
	}
	if err := checkNetns(fds[0], req.Pod.NetnsPath); err != nil {
		return cnimsg.Response{}, rejectErr{err}
	}
	if err := redirect.CheckPodNetns(fds[0], s.opts.HostNetns); err != nil {
		s.nodeNetns.Add(1)
		return cnimsg.Response{}, rejectErr{fmt.Errorf("pod %s/%s netns %s: %w", req.Pod.Namespace, req.Pod.Name, req.Pod.NetnsPath, err)}
	}
	pod := Pod{Pod: req.Pod, Capture: redirect.Config{ProbeSources: req.Pod.Gateways},
		Netns: redirect.PodNetns{ID: req.Pod.ContainerID, NetnsPath: req.Pod.NetnsPath, Netns: fds[0],
			Interface: req.Pod.Interface, Addresses: req.Pod.IPs}}
	host, peerErr := s.opts.HostPeer(fds[0], req.Pod.Interface)
	if peerErr == nil {
		pod.Netns.HostInterface = host
	} else if len(pod.Capture.ProbeSources) > 0 {
		// Without the host side nothing can tell a probe from a forgery:
		// no probe exemption.
		pod.Capture.ProbeSources = nil
	} else {
		peerErr = nil
	}
	if req.Op == cnimsg.OpCheck {
		enrolled, err := s.opts.Enroller.Check(ctx, pod)
		if err != nil {
			return cnimsg.Response{}, fmt.Errorf("check: %w", err)
		}
		s.checked.Add(1)
		return cnimsg.Response{OK: true, Enrolled: enrolled}, nil
	}
	enrolled, err := s.opts.Enroller.Add(ctx, pod)
	if err != nil {
		return cnimsg.Response{}, fmt.Errorf("enrol: %w", err)
	}
	if !enrolled {
		s.notEnrolled.Add(1)
		return cnimsg.Response{OK: true, Enrolled: false}, nil
	}
	s.added.Add(1)
	if peerErr != nil {
		log.Warn("no host-side peer found; kubelet probes are captured", "err", peerErr)
	}
	log.Info("pod enrolled", "ips", fmt.Sprint(req.Pod.IPs))
	return cnimsg.Response{OK: true, Enrolled: true}, nil
}

func (s *Server) checkPeer(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if cred.Uid != s.opts.AllowUID {
		return fmt.Errorf("%w: peer uid %d (pid %d)", ErrUnauthenticated, cred.Uid, cred.Pid)
	}
	return nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var files []*os.File
	var errs []error
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "netns"))
		}
	}
	return files, errors.Join(errs...)
}

// checkNetns verifies f is a network namespace and is the one at path.
func checkNetns(f *os.File, path string) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		return errors.New("descriptor is not a namespace")
	}
	const nsGetNstype = 0xb703 // NS_GET_NSTYPE
	if t, err := unix.IoctlRetInt(int(f.Fd()), nsGetNstype); err != nil || t != unix.CLONE_NEWNET {
		return errors.New("descriptor is not a network namespace")
	}
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return err
	}
	if err := unix.Stat(path, &b); err != nil {
		return fmt.Errorf("netns path: %w", err)
	}
	if a.Dev != b.Dev || a.Ino != b.Ino {
		return fmt.Errorf("netns descriptor is not the namespace at %s", path)
	}
	return nil
}
