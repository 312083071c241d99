package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

func pattern(seed uint64, n int) []byte {
	b := make([]byte, n+8)
	r := rand.New(rand.NewPCG(seed, ^seed))
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// mixedApp implements the destination side of TestConcurrentHalfCloses.
// Header: mode(1) seed(8) clientLen(4) serverLen(4).
type mixedApp struct {
	mu      sync.Mutex
	results map[uint64]error
}

func (m *mixedApp) serve(c net.Conn) {
	defer c.Close()
	tcp := c.(*net.TCPConn)
	var h [17]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return
	}
	mode, seed := h[0], binary.BigEndian.Uint64(h[1:])
	clientLen, serverLen := int(binary.BigEndian.Uint32(h[9:])), int(binary.BigEndian.Uint32(h[13:]))
	check := func(got []byte) error {
		if want := pattern(seed, clientLen); sha256.Sum256(got) != sha256.Sum256(want) {
			return fmt.Errorf("seed %d: app got %d bytes, want %d (checksum differs)", seed, len(got), clientLen)
		}
		return nil
	}
	switch mode {
	case 0: // client closes first, then the app answers and closes
		got, _ := io.ReadAll(c)
		err := check(got)
		ok := byte(1)
		if err != nil {
			ok = 0
		}
		_, _ = c.Write(append([]byte{ok}, pattern(seed+1, serverLen)...))
		m.record(seed, err)
	case 1: // the app sends everything and closes its side first
		_, _ = c.Write(pattern(seed+1, serverLen))
		_ = tcp.CloseWrite()
		got, _ := io.ReadAll(c)
		m.record(seed, check(got))
	case 2: // both at once
		done := make(chan struct{})
		go func() {
			_, _ = c.Write(pattern(seed+1, serverLen))
			_ = tcp.CloseWrite()
			close(done)
		}()
		got, _ := io.ReadAll(c)
		<-done
		m.record(seed, check(got))
	}
}

func (m *mixedApp) record(seed uint64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.results[seed] = err
}

func TestConcurrentHalfCloses(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			app := &mixedApp{results: map[uint64]error{}}
			e := newEnv(t, envOpt{app: app.serve, v6: v6, settings: Settings{MaxStreamsPerConn: 10}})
			const n = 100
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- runMixed(e, uint64(i+1), byte(i%3), (i*7919)%(96<<10), (i*104729)%(96<<10))
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			waitFor(t, func() bool { app.mu.Lock(); defer app.mu.Unlock(); return len(app.results) == n })
			for seed, err := range app.results {
				if err != nil {
					t.Errorf("seed %d: %v", seed, err)
				}
			}
			st := e.srv.Stats()
			if st.Streams != n || st.Resets != 0 {
				t.Errorf("server stats %+v", st)
			}
		})
	}
}

func runMixed(e *env, seed uint64, mode byte, clientLen, serverLen int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := e.cli.Dial(ctx, e.req())
	if err != nil {
		return err
	}
	defer c.Close()
	s := c.(*Stream)
	var h [17]byte
	h[0] = mode
	binary.BigEndian.PutUint64(h[1:], seed)
	binary.BigEndian.PutUint32(h[9:], uint32(clientLen))
	binary.BigEndian.PutUint32(h[13:], uint32(serverLen))
	payload := append(h[:], pattern(seed, clientLen)...)
	want := pattern(seed+1, serverLen)
	var got []byte
	var rerr error
	read := func() { got, rerr = io.ReadAll(s) }
	switch mode {
	case 0:
		if _, err := s.Write(payload); err != nil {
			return err
		}
		if err := s.CloseWrite(); err != nil {
			return err
		}
		read()
		want = append([]byte{1}, want...)
	default: // the app may finish first: read concurrently with writing
		done := make(chan struct{})
		go func() { read(); close(done) }()
		for off := 0; off < len(payload); off += 4096 {
			if _, err := s.Write(payload[off:min(off+4096, len(payload))]); err != nil {
				return err
			}
		}
		if err := s.CloseWrite(); err != nil {
			return err
		}
		<-done
	}
	if rerr != nil {
		return fmt.Errorf("seed %d mode %d: read: %w", seed, mode, rerr)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("seed %d mode %d: got %d bytes, want %d", seed, mode, len(got), len(want))
	}
	return nil
}

func TestResetPropagation(t *testing.T) {
	t.Run("destination resets", func(t *testing.T) {
		e := newEnv(t, envOpt{app: func(c net.Conn) {
			buf := make([]byte, 1)
			_, _ = c.Read(buf)
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}})
		s := e.dial(t)
		defer s.Close()
		_, _ = s.Write([]byte("x"))
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(s)
		if !errors.Is(err, ErrStreamReset) {
			t.Fatalf("read after destination RST: %v, want ErrStreamReset", err)
		}
		if ci := <-e.ended; ci.Outcome != OutcomeReset {
			t.Fatalf("server outcome %q", ci.Outcome)
		}
	})
	t.Run("client resets", func(t *testing.T) {
		appErr := make(chan error, 1)
		e := newEnv(t, envOpt{app: func(c net.Conn) {
			defer c.Close()
			_, err := io.Copy(io.Discard, c)
			appErr <- err
		}})
		s := e.dial(t)
		_, _ = s.Write([]byte("partial request"))
		time.Sleep(20 * time.Millisecond)
		_ = s.Reset()
		select {
		case err := <-appErr:
			if err == nil {
				t.Fatal("destination saw a clean EOF, want a reset")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("destination never saw the reset")
		}
	})
}

func TestSpliceCancel(t *testing.T) {
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	defer a2.Close()
	defer b2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := Splice(ctx, a1, b1, Settings{})
		done <- err
	}()
	go func() { _, _ = a2.Write([]byte("hi")) }()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(b2, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("spliced %q %v", buf, err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Splice returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Splice ignored cancellation")
	}
}
