// The soak: many HBONE connections held with traffic, then closed, with the
// two endpoints in processes of their own.

package tunnelbench

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity/identitytest"
	"github.com/ambit-mesh/ambit/tunnel"
)

// SoakConfig says how RunSoak loads the endpoints. Zero fields take the
// defaults written beside them.
type SoakConfig struct {
	Conns    int           // concurrent connections; default 5,000
	Hold     time.Duration // how long they are held with traffic; default 1 minute
	Interval time.Duration // each connection exchanges 1 KiB every Interval (jittered); default 2 s
	// Settle bounds the wait, after every connection closed, for both
	// endpoints to come back within 5% of their baseline. Default 1 minute.
	Settle time.Duration
	// Rounds of open, hold, close, settle in the same endpoint processes;
	// default 2, so that what the first round leaves behind (memory the Go
	// runtime keeps for reuse) can be told from a leak (growth every
	// round).
	Rounds int
	// IdleTimeout of the client endpoint's tunnel pool: the tunnels close
	// this long after their last stream. Default 5 s.
	IdleTimeout time.Duration
	// ProfileDir, if set, receives each endpoint's heap profile
	// (heap-client.pprof, heap-server.pprof) taken after the settle, and
	// their goroutine stacks (goroutines-*.txt) if connections fail to open.
	ProfileDir string
	// Command returns the command that runs this program in an endpoint
	// role, whose main calls SoakRole(role, dir). Required.
	Command func(role, dir string) *exec.Cmd
}

func (c SoakConfig) withDefaults() SoakConfig {
	if c.Conns <= 0 {
		c.Conns = 5000
	}
	if c.Hold <= 0 {
		c.Hold = time.Minute
	}
	if c.Interval <= 0 {
		c.Interval = 2 * time.Second
	}
	if c.Settle <= 0 {
		c.Settle = time.Minute
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Second
	}
	if c.Rounds <= 0 {
		c.Rounds = 2
	}
	return c
}

// ProcStats is what one endpoint process holds. RSS and heap are read
// after a GC that returns free memory to the OS.
type ProcStats struct {
	Goroutines int   `json:"goroutines"`
	FDs        int   `json:"fds"`
	RSSKiB     int64 `json:"rss_kib"`
	HeapKiB    int64 `json:"heap_inuse_kib"`
}

func (p ProcStats) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, RSS %.1f MiB, heap %.1f MiB", p.Goroutines, p.FDs, float64(p.RSSKiB)/1024, float64(p.HeapKiB)/1024)
}

// within reports whether p is at most 5% above base on goroutines, fds
// and RSS.
func (p ProcStats) within(base ProcStats) bool {
	ok := func(v, b float64) bool { return v <= b*1.05 }
	return ok(float64(p.Goroutines), float64(base.Goroutines)) && ok(float64(p.FDs), float64(base.FDs)) && ok(float64(p.RSSKiB), float64(base.RSSKiB))
}

func (p *ProcStats) max(o ProcStats) {
	p.Goroutines = max(p.Goroutines, o.Goroutines)
	p.FDs = max(p.FDs, o.FDs)
	p.RSSKiB = max(p.RSSKiB, o.RSSKiB)
	p.HeapKiB = max(p.HeapKiB, o.HeapKiB)
}

// SoakEndpoint is one endpoint's figures.
type SoakEndpoint struct {
	Name     string        `json:"name"`
	Baseline ProcStats     `json:"baseline"`
	Peak     ProcStats     `json:"peak"`
	After    ProcStats     `json:"after"`
	Settled  bool          `json:"settled"`     // After is within 5% of Baseline on goroutines, fds and RSS
	SettleIn time.Duration `json:"settle_time"` // from the last close to settled (or to giving up)
	// CountsIn is when goroutines and fds alone were back within 5%
	// (negative: never, within Settle).
	CountsIn time.Duration `json:"counts_settle_time"`
}

// countsWithin is within on goroutines and fds only.
func (p ProcStats) countsWithin(base ProcStats) bool {
	q := p
	q.RSSKiB = base.RSSKiB
	return q.within(base)
}

// SoakRound is one open-hold-close cycle.
type SoakRound struct {
	OpenTime  time.Duration  `json:"open_time"` // to open every connection
	Exchanges int64          `json:"exchanges"` // 1 KiB echoes checked during the hold
	Errors    int64          `json:"errors"`    // failed or wrong echoes
	FirstErr  string         `json:"first_error,omitempty"`
	Endpoints []SoakEndpoint `json:"endpoints"`
}

// SoakReport is the outcome of RunSoak.
type SoakReport struct {
	Conns  int           `json:"conns"`
	Hold   time.Duration `json:"hold"`
	Rounds []SoakRound   `json:"rounds"`
}

// Table writes the report for people.
func (r SoakReport) Table(w io.Writer) error {
	var b bytes.Buffer
	for k, rd := range r.Rounds {
		fmt.Fprintf(&b, "soak round %d: %d connections opened in %v, held %v with traffic: %d echoes of 1 KiB checked, %d errors\n",
			k+1, r.Conns, rd.OpenTime.Round(time.Millisecond), r.Hold, rd.Exchanges, rd.Errors)
		if rd.FirstErr != "" {
			fmt.Fprintf(&b, "  first error: %s\n", rd.FirstErr)
		}
		for _, e := range rd.Endpoints {
			verdict := fmt.Sprintf("goroutines, fds and RSS back within 5%% of the baseline after %v", e.SettleIn.Round(100*time.Millisecond))
			if !e.Settled {
				verdict = fmt.Sprintf("NOT all back within 5%% of the baseline after %v", e.SettleIn.Round(100*time.Millisecond))
				if e.CountsIn >= 0 {
					verdict += fmt.Sprintf(" (goroutines and fds were after %v)", e.CountsIn.Round(100*time.Millisecond))
				}
			}
			fmt.Fprintf(&b, "  %s endpoint:\n    baseline %v\n    peak     %v\n    after    %v\n    %s\n", e.Name, e.Baseline, e.Peak, e.After, verdict)
			if n := float64(r.Conns); n > 0 {
				fmt.Fprintf(&b, "    per connection at the peak: %.2f goroutines, %.2f fds, %.1f KiB RSS\n",
					float64(e.Peak.Goroutines-e.Baseline.Goroutines)/n, float64(e.Peak.FDs-e.Baseline.FDs)/n, float64(e.Peak.RSSKiB-e.Baseline.RSSKiB)/n)
			}
			if k > 0 {
				prev := r.Rounds[k-1].Endpoints
				for _, p := range prev {
					if p.Name == e.Name {
						fmt.Fprintf(&b, "    after this round vs the previous one: %+d goroutines, %+d fds, %+.1f MiB RSS, %+.1f MiB heap\n",
							e.After.Goroutines-p.After.Goroutines, e.After.FDs-p.After.FDs, float64(e.After.RSSKiB-p.After.RSSKiB)/1024, float64(e.After.HeapKiB-p.After.HeapKiB)/1024)
					}
				}
			}
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// soakWorld is what the roles share through the soak directory.
type soakWorld struct {
	Backend     string        `json:"backend"`
	Tunnel      string        `json:"tunnel"`
	IdleTimeout time.Duration `json:"idle_timeout"`
}

var soakServerID = spiffeid.RequireFromString("spiffe://cluster.local/ns/soak/sa/server")

// soakSources is how many source workloads the soak's connections come
// from.
const soakSources = 10

func soakSource(i int) spiffeid.ID {
	return spiffeid.RequireFromString(fmt.Sprintf("spiffe://cluster.local/ns/soak/sa/client-%d", i))
}

// RunSoak runs the soak: the server endpoint (tunnel.Server) and the
// client endpoint (a listener that opens a tunnel.Client stream per
// accepted connection, from 10 source workloads in turn, and splices, as
// the daemon's outbound side does) each in a process of their own, started
// with cfg.Command, and the applications (the connecting side and an echo
// backend) in this process.
// Each endpoint's goroutines, descriptors and RSS are read before (after
// one warm-up connection), sampled while the connections are held, and
// polled after they closed until they are back within 5% of the baseline.
func RunSoak(ctx context.Context, cfg SoakConfig, logf func(string, ...any)) (SoakReport, error) {
	cfg = cfg.withDefaults()
	if cfg.Command == nil {
		return SoakReport{}, errors.New("tunnelbench: SoakConfig.Command is required")
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	rep := SoakReport{Conns: cfg.Conns, Hold: cfg.Hold}
	dir, err := os.MkdirTemp("", "ambit-soak-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	ca, err := identitytest.NewCA(soakServerID.TrustDomain())
	if err != nil {
		return rep, err
	}
	if err := saveCA(dir, ca); err != nil {
		return rep, err
	}
	b, err := newBackend()
	if err != nil {
		return rep, err
	}
	defer b.close()

	server, err := startRole(ctx, cfg.Command("server", dir))
	if err != nil {
		return rep, fmt.Errorf("server endpoint: %w", err)
	}
	defer server.stop()
	world := soakWorld{Backend: b.addr(), Tunnel: server.addr, IdleTimeout: cfg.IdleTimeout}
	js, _ := json.Marshal(world)
	if err := os.WriteFile(filepath.Join(dir, "world.json"), js, 0o600); err != nil {
		return rep, err
	}
	client, err := startRole(ctx, cfg.Command("client", dir))
	if err != nil {
		return rep, fmt.Errorf("client endpoint: %w", err)
	}
	defer client.stop()
	roles := []*role{client, server}
	names := []string{"client", "server"}

	// Warm up (TLS, pools, buffers) with one connection, let its tunnel
	// close, then take the baseline.
	if c, err := soakDial(ctx, client.addr); err != nil {
		return rep, fmt.Errorf("warm-up connection: %w", err)
	} else {
		_ = c.Close()
	}
	waitFor(func() bool { return b.open() == 0 }, 10*time.Second)
	time.Sleep(cfg.IdleTimeout + time.Second)
	base := make([]ProcStats, len(roles))
	for i, r := range roles {
		if base[i], err = r.stats(); err != nil {
			return rep, err
		}
		logf("soak: %s endpoint baseline: %v", names[i], base[i])
	}
	for k := 1; k <= cfg.Rounds; k++ {
		rd, err := soakRound(ctx, cfg, client.addr, b, roles, names, base, logf)
		rep.Rounds = append(rep.Rounds, rd)
		if err != nil {
			return rep, fmt.Errorf("round %d: %w", k, err)
		}
	}
	if cfg.ProfileDir != "" {
		for i, r := range roles {
			path, err := filepath.Abs(filepath.Join(cfg.ProfileDir, "heap-"+names[i]+".pprof"))
			if err == nil {
				err = r.command("heap " + path)
			}
			if err != nil {
				return rep, fmt.Errorf("%s endpoint heap profile: %w", names[i], err)
			}
		}
	}
	return rep, nil
}

// soakRound opens, holds and closes the connections once, and waits for
// the endpoints to come back to base.
func soakRound(ctx context.Context, cfg SoakConfig, front string, b *backend, roles []*role, names []string, base []ProcStats, logf func(string, ...any)) (SoakRound, error) {
	var rep SoakRound
	eps := make([]SoakEndpoint, len(roles))
	for i := range eps {
		eps[i].Name, eps[i].Baseline, eps[i].Peak = names[i], base[i], base[i]
	}
	sample := func() error {
		for i, r := range roles {
			s, err := r.stats()
			if err != nil {
				return err
			}
			eps[i].Peak.max(s)
		}
		return nil
	}

	// Open every connection (64 at a time), each checked with one echo.
	t0 := time.Now()
	conns := make([]net.Conn, cfg.Conns)
	var openErr atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Conns || openErr.Load() != nil {
					return
				}
				c, err := soakDial(ctx, front)
				if err != nil {
					openErr.CompareAndSwap(nil, fmt.Errorf("connection %d: %w", i, err))
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	rep.OpenTime = time.Since(t0)
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}
	if err, _ := openErr.Load().(error); err != nil {
		for i, r := range roles {
			if s, serr := r.stats(); serr == nil {
				logf("soak: opening failed; %s endpoint holds %v", names[i], s)
			}
		}
		logf("soak: opening failed; the backend holds %d connections", b.open())
		if cfg.ProfileDir != "" {
			for i, r := range roles {
				if path, err := filepath.Abs(filepath.Join(cfg.ProfileDir, "goroutines-"+names[i]+".txt")); err == nil {
					_ = r.command("goroutine " + path)
				}
			}
		}
		closeAll()
		return rep, err
	}
	logf("soak: %d connections open in %v", cfg.Conns, rep.OpenTime.Round(time.Millisecond))
	if err := sample(); err != nil {
		closeAll()
		return rep, err
	}

	// Hold them with traffic, sampling the endpoints every 5 s.
	holdCtx, cancel := context.WithTimeout(ctx, cfg.Hold)
	var exchanges, errs atomic.Int64
	var firstErr atomic.Value
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			msg, back := make([]byte, 1024), make([]byte, 1024)
			for {
				t := time.NewTimer(cfg.Interval/2 + time.Duration(r.Int64N(int64(cfg.Interval))))
				select {
				case <-holdCtx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				for j := range msg {
					msg[j] = byte(r.Uint32())
				}
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, err := c.Write(msg)
				if err == nil {
					_, err = io.ReadFull(c, back)
				}
				if err == nil && !bytes.Equal(msg, back) {
					err = errors.New("echo differs")
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("connection %d: %v", i, err))
					return
				}
				exchanges.Add(1)
			}
		}()
	}
	tick := time.NewTicker(5 * time.Second)
	var sampleErr error
	for holdCtx.Err() == nil && sampleErr == nil {
		select {
		case <-holdCtx.Done():
		case <-tick.C:
			sampleErr = sample()
		}
	}
	tick.Stop()
	cancel()
	wg.Wait()
	rep.Exchanges, rep.Errors = exchanges.Load(), errs.Load()
	rep.FirstErr, _ = firstErr.Load().(string)
	if sampleErr == nil {
		sampleErr = sample()
	}
	closeAll()
	if sampleErr != nil {
		return rep, sampleErr
	}
	logf("soak: held %v: %d echoes, %d errors; closing", cfg.Hold, rep.Exchanges, rep.Errors)

	// Closed: poll until each endpoint is back within 5% of its baseline.
	closed := time.Now()
	waitFor(func() bool { return b.open() == 0 }, cfg.Settle)
	for i := range eps {
		eps[i].CountsIn = -1
	}
	for {
		done := true
		for i, r := range roles {
			if eps[i].Settled {
				continue
			}
			s, err := r.stats()
			if err != nil {
				return rep, err
			}
			eps[i].After = s
			eps[i].SettleIn = time.Since(closed)
			if eps[i].CountsIn < 0 && s.countsWithin(eps[i].Baseline) {
				eps[i].CountsIn = eps[i].SettleIn
			}
			eps[i].Settled = s.within(eps[i].Baseline)
			done = done && eps[i].Settled
		}
		if done || time.Since(closed) > cfg.Settle {
			break
		}
		time.Sleep(time.Second)
	}
	rep.Endpoints = eps
	return rep, nil
}

// soakDial connects through the client endpoint to the echo backend and
// checks one echo.
func soakDial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := []byte{modeEchoRW, 'h', 'i'}
	back := make([]byte, 2)
	if _, err = c.Write(msg); err == nil {
		_, err = io.ReadFull(c, back)
	}
	if err != nil || string(back) != "hi" {
		_ = c.Close()
		if err == nil {
			err = fmt.Errorf("echo %q", back)
		}
		return nil, err
	}
	return c, nil
}

// role is an endpoint process, driven over its standard input and output.
type role struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	addr string
	mu   sync.Mutex
}

func startRole(ctx context.Context, cmd *exec.Cmd) (*role, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &role{cmd: cmd, in: in, out: bufio.NewReader(out)}
	line, err := r.readLine(ctx, time.Minute)
	if err != nil || !strings.HasPrefix(line, "ready ") {
		r.stop()
		return nil, fmt.Errorf("no ready line (%q, %v)", line, err)
	}
	r.addr = strings.TrimPrefix(line, "ready ")
	return r, nil
}

func (r *role) readLine(ctx context.Context, limit time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := r.out.ReadString('\n')
		ch <- res{strings.TrimSpace(s), err}
	}()
	select {
	case x := <-ch:
		return x.s, x.err
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(limit):
		return "", errors.New("endpoint process did not answer")
	}
}

// command sends one command line and returns its answer line.
func (r *role) call(cmd string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := io.WriteString(r.in, cmd+"\n"); err != nil {
		return "", err
	}
	return r.readLine(context.Background(), time.Minute)
}

func (r *role) command(cmd string) error {
	line, err := r.call(cmd)
	if err == nil && line != "ok" {
		err = errors.New(line)
	}
	return err
}

func (r *role) stats() (ProcStats, error) {
	line, err := r.call("stats")
	if err != nil {
		return ProcStats{}, err
	}
	var s ProcStats
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		return ProcStats{}, fmt.Errorf("endpoint stats %q: %w", line, err)
	}
	return s, nil
}

// stop closes the role's input (it shuts down and exits) and waits.
func (r *role) stop() {
	_ = r.in.Close()
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
}

// SoakRole runs one endpoint of RunSoak in this process ("server" or
// "client"), with the material RunSoak left in dir: it prints "ready
// ADDR", answers each "stats" line on its input with a ProcStats JSON line,
// and shuts down when its input ends.
func SoakRole(roleName, dir string) error {
	ca, err := loadCA(dir)
	if err != nil {
		return err
	}
	svids := identitytest.NewSource(ca)
	bundle := ca.Bundle()
	log := slog.New(slog.DiscardHandler)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var shutdown func()
	switch roleName {
	case "server":
		srv, err := tunnel.NewServer(tunnel.ServerConfig{SVIDs: svids, Bundles: bundle, Authorizer: tunnel.AllowAll(), Logger: log})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = srv.Serve(ctx, ln, tunnel.Workload{ID: soakServerID, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
		}()
		shutdown = func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
		}
	case "client":
		js, err := os.ReadFile(filepath.Join(dir, "world.json"))
		if err != nil {
			return err
		}
		var w soakWorld
		if err := json.Unmarshal(js, &w); err != nil {
			return err
		}
		dst, err := netip.ParseAddrPort(w.Backend)
		if err != nil {
			return err
		}
		tun, err := netip.ParseAddrPort(w.Tunnel)
		if err != nil {
			return err
		}
		cli, err := tunnel.NewClient(tunnel.ClientConfig{SVIDs: svids, Bundles: bundle, IdleTimeout: w.IdleTimeout, Logger: log})
		if err != nil {
			return err
		}
		wg.Add(1)
		var n atomic.Uint64
		go acceptLoop(ln, &wg, func(in net.Conn) {
			// Connections come from soakSources workloads in turn, as on a
			// node with many pods (the server caps streams per source
			// identity: tunnel.GuardConfig).
			src := soakSource(int(n.Add(1) % soakSources))
			out, err := cli.Dial(ctx, tunnel.DialRequest{Source: src, Destination: dst, Tunnel: tun, Expected: []spiffeid.ID{soakServerID}})
			if err != nil {
				_ = in.Close()
				return
			}
			_, _, _ = tunnel.Splice(ctx, in, out, tunnel.Settings{})
		})
		shutdown = func() { _ = cli.Close() }
	default:
		return fmt.Errorf("tunnelbench: unknown soak role %q", roleName)
	}
	fmt.Printf("ready %s\n", ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch cmd, arg, _ := strings.Cut(sc.Text(), " "); cmd {
		case "stats":
			js, _ := json.Marshal(procStats())
			fmt.Printf("%s\n", js)
		case "heap", "goroutine":
			if err := writeProfile(cmd, arg); err != nil {
				fmt.Printf("heap profile: %v\n", err)
			} else {
				fmt.Println("ok")
			}
		default:
			fmt.Printf("unknown command %q\n", cmd)
		}
	}
	_ = ln.Close()
	cancel()
	shutdown()
	wg.Wait()
	return nil
}

func writeProfile(name, path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	debugLevel := 0
	if name == "goroutine" {
		debugLevel = 2 // readable stacks
	}
	if err := pprof.Lookup(name).WriteTo(f, debugLevel); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// procStats reads this process's figures (Linux /proc).
func procStats() ProcStats {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s := ProcStats{Goroutines: runtime.NumGoroutine(), HeapKiB: int64(m.HeapInuse / 1024)}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.FDs = len(ents) - 1 // the directory being read
	}
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				s.RSSKiB, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return s
}

func saveCA(dir string, ca *identitytest.CA) error {
	key, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
	pemBytes = append(pemBytes, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})...)
	return os.WriteFile(filepath.Join(dir, "ca.pem"), pemBytes, 0o600)
}

func loadCA(dir string) (*identitytest.CA, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	ca := &identitytest.CA{}
	for {
		var blk *pem.Block
		blk, raw = pem.Decode(raw)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			if ca.Cert, err = x509.ParseCertificate(blk.Bytes); err != nil {
				return nil, err
			}
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			var ok bool
			if ca.Key, ok = k.(crypto.Signer); !ok {
				return nil, errors.New("tunnelbench: CA key is not a signer")
			}
		}
	}
	if ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("tunnelbench: no CA in the soak directory")
	}
	ca.TrustDomain = soakServerID.TrustDomain()
	return ca, nil
}
