package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The hostile peer as a separate process: the test binary re-executed with
// attackerEnv set runs one attack against a server of the parent process
// (credentials in files, since the test CA lives in the parent) and prints
// one result line.

const (
	attackerEnv     = "TUNNEL_HOSTILE_ATTACK"
	attackerDirEnv  = "TUNNEL_HOSTILE_DIR"
	attackerAddrEnv = "TUNNEL_HOSTILE_ADDR"
)

// runAttacker is the child: it dials the server with the client
// certificate in the directory, plays the attack and prints
// "result goaway=<code> frames=<n>". It returns the exit code.
func runAttacker(attack string) int {
	dir, addr := os.Getenv(attackerDirEnv), os.Getenv(attackerAddrEnv)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	defer nc.Close()
	// The attacker does not care who the server is.
	tc := tls.Client(nc, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // a hostile peer
	if err := tc.Handshake(); err != nil {
		fmt.Println("error", err)
		return 2
	}
	fr := http2.NewFramer(tc, tc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil || fr.WriteSettings() != nil {
		fmt.Println("error preface")
		return 2
	}
	goAway := make(chan http2.ErrCode, 1)
	go func() {
		for {
			_ = tc.SetReadDeadline(time.Now().Add(20 * time.Second))
			f, err := fr.ReadFrame()
			if err != nil {
				close(goAway)
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				goAway <- g.ErrCode
				return
			}
		}
	}()
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	authority := os.Getenv(attackerAddrEnv + "_APP")
	n := 0
	var werr error
	for id := uint32(1); n < 20000 && werr == nil; id += 2 {
		switch attack {
		case "rapid-reset":
			hbuf.Reset()
			_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
			_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
			if werr = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); werr == nil {
				werr = fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		case "settings":
			werr = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
		case "ping":
			werr = fr.WritePing(false, [8]byte{byte(n)})
		case "continuation":
			if n == 0 {
				hbuf.Reset()
				_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
				werr = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes()})
			} else {
				werr = fr.WriteContinuation(1, false, nil)
			}
		default:
			fmt.Println("error unknown attack", attack)
			return 2
		}
		n++
	}
	select {
	case code, ok := <-goAway:
		if !ok {
			fmt.Printf("result goaway=none frames=%d\n", n)
		} else {
			fmt.Printf("result goaway=%s frames=%d\n", code, n)
		}
	case <-time.After(15 * time.Second):
		fmt.Printf("result goaway=none frames=%d (connection still open)\n", n)
	}
	return 0
}

// TestHostileProcess plays attacks from a separate process (the test
// binary re-executed) against this process's server: each must end with
// GOAWAY(ENHANCE_YOUR_CALM), the server's goroutines and heap stay
// bounded, and a legitimate client gets through meanwhile.
func TestHostileProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	e := newEnv(t, envOpt{settings: Settings{MaxConcurrentStreams: 50}})
	dir := t.TempDir()
	svid, err := e.cliSVIDs.GetX509SVIDFor(context.Background(), srcID)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, attack := range []string{"rapid-reset", "settings", "ping", "continuation"} {
		t.Run(attack, func(t *testing.T) {
			before := measure()
			calm := e.srv.Stats().CalmCloses
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), attackerEnv+"="+attack, attackerDirEnv+"="+dir,
				attackerAddrEnv+"="+e.tunnel.String(), attackerAddrEnv+"_APP="+e.app.String())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			peak := peakGoroutines()
			legit(t, e) // while the attacker runs (or right after a fast one)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("attacker: %v\n%s", err, out.String())
			}
			peakG := peak()
			legit(t, e)
			waitFor(t, func() bool { return e.srv.Stats().CalmCloses == calm+1 })
			after := measure()
			line := strings.TrimSpace(out.String())
			refused := strings.Contains(line, "goaway=ENHANCE_YOUR_CALM")
			report(t, "separate process: "+attack+" ("+line+")", refused, before, footprint{goroutines: peakG}, after)
			if !refused {
				t.Errorf("attacker saw %q, want GOAWAY ENHANCE_YOUR_CALM", line)
			}
			if g := peakG - before.goroutines; g > 200 {
				t.Errorf("server goroutines grew by %d during the attack", g)
			}
			if g := after.goroutines - before.goroutines; g > 20 {
				t.Errorf("server goroutines grew by %d after the attack", g)
			}
			if after.heap > before.heap+32<<20 {
				t.Errorf("heap grew from %d to %d bytes", before.heap, after.heap)
			}
		})
	}
}
