// Command echo is the test application of ambit's end-to-end scenarios. One
// static binary, two modes:
//
//	echo server -listen :8080 [-name NAME]
//	    Accepts TCP connections; every line received is answered with one line
//	        <name> peer=<client address> local=<server address> got=<line>
//	    and logged to stdout as
//	        conn peer=<client address> got=<line>
//	    so a test sees which address (which pod, or the node daemon) really
//	    connected. NAME defaults to $POD_NAME, then the hostname.
//
//	echo client -target HOST:PORT -marker TEXT [-count N] [-interval D] [-timeout D] [-connect-only]
//	    Opens a new connection per attempt, sends TEXT, reads the answer and
//	    prints "ok <answer>" or "fail <error>"; after N attempts (0: forever)
//	    prints "done ok=<n> fail=<m>" and exits 1 if any attempt failed.
//	    With -connect-only an attempt only opens the connection (for servers
//	    that do not speak the echo protocol) and prints "ok connected <local>".
//
//	Every client mode takes -linger D: on SIGTERM it prints "term at=<unix ms>"
//	and keeps going for D (a graceful shutdown that still uses the network).
//
//	echo client -hold -target HOST:PORT -marker TEXT [-count N] [-interval D] [-timeout D]
//	    Opens ONE connection and sends TEXT on it every interval (N times, 0:
//	    until terminated), printing "ok <unix ms> <answer>" per answer; the
//	    first error prints "fail <unix ms> <error>" and ends it (exit 1). A
//	    long-lived connection, for tests that must see when it is cut.
//
//	echo server -listen :8080 -bench-listen :8081
//	    Also serves the bench protocol on the second port (bench.go): after a
//	    header line ("rr N", "sink N", "source N") it answers
//	    "ok peer=<client address>" and echoes N-byte messages, swallows N
//	    bytes then says "done N", or sends N bytes. Nothing is logged per
//	    message.
//
//	echo client -bench rr,connect,bulk,bulk-down,watch -target HOST:BENCHPORT [-size B] [-n N] [-warmup W] [-bytes B]
//	    Runs the named modes in order against a bench port and prints one
//	    result line each, "bench mode=<m> key=value ...":
//	      rr: one connection, N (5000) B-byte (1024) exchanges after W (100)
//	        untimed ones: n, p50_us, p90_us, p99_us, mean_us, min_us, max_us;
//	      connect: N (1000) new connections, each dial + header + one B-byte
//	        exchange + close, timed whole: the same fields;
//	      bulk (bulk-up) / bulk-down: N (3) transfers of B (256 MiB) bytes, each
//	        on a new connection, client to server / server to client:
//	        MBps_median, MBps_min, MBps_max (MB = 10^6 bytes);
//	      watch: a new connection every -interval (each on its own, so a
//	        hanging one does not delay the next) until the server sees
//	        -until-peer as the client's host (or -duration passes), printing
//	        "watch at=<start unix ms> ms=<took> peer=<addr>" for the first
//	        answer and each from another host than the first's, and
//	        "watch at=<start unix ms> ms=<took> fail=<error>" per failure:
//	        when ambit takes over the connections, the peer becomes the
//	        destination pod's own address.
//	    Every line carries peer=<what the server saw>. A failure prints
//	    "bench mode=<m> error=<quoted>" and exits 1.
//
//	echo files PATH...
//	    Prints each file ("file <path>" then its content), then waits for
//	    SIGTERM: a long-running pod that shows what a hostPath mount holds on
//	    its node.
//
// The marker lets a wire capture prove that plaintext never crossed the
// network; the server's answer lets a test check the peer address.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: echo server|client|files [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "server":
		err = serverMain(ctx, os.Args[2:])
	case "client":
		err = clientMain(ctx, os.Args[2:])
	case "files":
		if err = printFiles(os.Stdout, os.Args[2:]); err == nil {
			<-ctx.Done()
		}
	default:
		err = fmt.Errorf("unknown mode %q (want server, client or files)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func serverMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "TCP address to listen on")
	name := fs.String("name", "", "name in answers (default $POD_NAME, then the hostname)")
	benchListen := fs.String("bench-listen", "", "also serve the bench protocol on this TCP address (see bench.go)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		*name = os.Getenv("POD_NAME")
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s name=%s\n", ln.Addr(), *name)
	if *benchListen == "" {
		return serve(ctx, ln, *name, os.Stdout)
	}
	bln, err := net.Listen("tcp", *benchListen)
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Printf("bench listening %s\n", bln.Addr())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- serve(ctx, ln, *name, os.Stdout); cancel() }()
	go func() { errc <- serveBench(ctx, bln, os.Stdout); cancel() }()
	return errors.Join(<-errc, <-errc)
}

// serve answers connections on ln until ctx ends.
func serve(ctx context.Context, ln net.Listener, name string, log io.Writer) error {
	var logMu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			r := bufio.NewReader(conn)
			for {
				line, err := r.ReadString('\n')
				line = strings.TrimRight(line, "\r\n")
				if line != "" {
					peer, local := conn.RemoteAddr(), conn.LocalAddr()
					logMu.Lock()
					fmt.Fprintf(log, "conn peer=%s got=%s\n", peer, line)
					logMu.Unlock()
					if _, werr := fmt.Fprintf(conn, "%s peer=%s local=%s got=%s\n", name, peer, local, line); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func clientMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	target := fs.String("target", "", "HOST:PORT to connect to (required)")
	marker := fs.String("marker", "", "text to send (required)")
	count := fs.Int("count", 1, "attempts; 0 means until terminated")
	interval := fs.Duration("interval", time.Second, "pause between attempts")
	timeout := fs.Duration("timeout", 5*time.Second, "per-attempt timeout")
	connectOnly := fs.Bool("connect-only", false, "only open the connection; send nothing")
	hold := fs.Bool("hold", false, "one connection, TEXT sent every interval")
	bench := fs.String("bench", "", "bench modes to run in order, comma separated: rr, connect, bulk (bulk-up), bulk-down, watch")
	size := fs.Int("size", 1024, "bench rr/connect: message size in bytes")
	n := fs.Int("n", 0, "bench: rr exchanges, connect connections or bulk transfers (0: 5000, 1000, 3)")
	warmup := fs.Int("warmup", 100, "bench rr/connect: exchanges or connections not counted, first")
	bytes := fs.Int64("bytes", 256<<20, "bench bulk: bytes per transfer")
	duration := fs.Duration("duration", time.Minute, "bench watch: give up after this long")
	untilPeer := fs.String("until-peer", "", "bench watch: stop once the server sees this peer host (error if never)")
	linger := fs.Duration("linger", 0, "on SIGTERM print \"term at=<unix ms>\" and keep going this long (a graceful shutdown)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *linger < 0 {
		return errors.New("client: -linger must not be negative")
	}
	if *linger > 0 {
		var cancel context.CancelFunc
		ctx, cancel = lingerContext(ctx, *linger, os.Stdout)
		defer cancel()
	}
	if *bench != "" {
		if *size < 1 || *size > maxRRSize || *bytes < 1 || *warmup < 0 || *n < 0 {
			return errors.New("client -bench: -size must be 1..1MiB, -bytes positive, -n and -warmup not negative")
		}
		return runBench(ctx, os.Stdout, *bench, benchConfig{target: *target, size: *size, count: *n, warmup: *warmup,
			bytes: *bytes, interval: *interval, duration: *duration, until: *untilPeer, timeout: *timeout})
	}
	if *hold {
		return holdMain(ctx, os.Stdout, *target, *marker, *count, *interval, *timeout)
	}
	if *target == "" || (*marker == "" && !*connectOnly) {
		return errors.New("client: -target and -marker are required")
	}
	attempt := func() (string, error) { return probe(ctx, *target, *marker, *timeout) }
	if *connectOnly {
		attempt = func() (string, error) { return connect(ctx, *target, *timeout) }
	}
	ok, fail := 0, 0
	for i := 0; *count == 0 || i < *count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(*interval):
			}
		}
		if ctx.Err() != nil {
			break // terminated: summarise what was done
		}
		answer, err := attempt()
		if err != nil {
			fail++
			fmt.Printf("fail %v at=%d\n", err, time.Now().UnixMilli())
			continue
		}
		ok++
		fmt.Printf("ok %s\n", answer)
	}
	fmt.Printf("done ok=%d fail=%d\n", ok, fail)
	if fail > 0 {
		return fmt.Errorf("%d of %d attempts failed", fail, ok+fail)
	}
	return nil
}

// holdMain keeps one connection and exchanges marker on it every interval.
func holdMain(ctx context.Context, w io.Writer, target, marker string, count int, interval, timeout time.Duration) error {
	if target == "" || marker == "" {
		return errors.New("client: -target and -marker are required")
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", target)
	cancel()
	if err != nil {
		fmt.Fprintf(w, "fail %d %v\n", time.Now().UnixMilli(), err)
		return err
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	for i := 0; count == 0 || i < count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				fmt.Fprintf(w, "done ok=%d\n", i)
				return nil
			case <-time.After(interval):
			}
		}
		_ = conn.SetDeadline(time.Now().Add(timeout))
		answer := ""
		if _, err = fmt.Fprintf(conn, "%s\n", marker); err == nil {
			answer, err = r.ReadString('\n')
		}
		if err != nil {
			fmt.Fprintf(w, "fail %d %v\n", time.Now().UnixMilli(), err)
			return err
		}
		fmt.Fprintf(w, "ok %d %s\n", time.Now().UnixMilli(), strings.TrimRight(answer, "\n"))
	}
	fmt.Fprintf(w, "done ok=%d\n", count)
	return nil
}

// probe opens one connection to target, sends marker and returns the answer.
func probe(ctx context.Context, target, marker string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "%s\n", marker); err != nil {
		return "", err
	}
	answer, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading answer: %w", err)
	}
	return strings.TrimRight(answer, "\n"), nil
}

// connect opens one connection to target and closes it.
func connect(ctx context.Context, target string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return "connected " + conn.LocalAddr().String(), nil
}

// printFiles writes "file <path>" and the content of each path to w.
func printFiles(w io.Writer, paths []string) error {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "file %s\n%s\n", p, b)
	}
	return nil
}
