package tunnelbench

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Backend modes: the first byte a client sends picks what the backend does
// with the connection.
const (
	modeSink byte = 'S' // read and discard everything, counting bytes
	modeEcho byte = 'E' // echo every byte back
	modeIdle byte = 'I' // hold the connection open, read until EOF
	// modeEchoRW echoes through a small buffer with read and write: the
	// soak's backend, whose thousands of echoes must not each hold the
	// pipe pair (two descriptors) io.Copy between TCP sockets takes for
	// splice(2).
	modeEchoRW byte = 'e'
)

// backend is the "app" the paths lead to.
type backend struct {
	ln       net.Listener
	received atomic.Int64
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newBackend() (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: back off, keep serving
			continue
		}
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go b.handle(c)
	}
}

func (b *backend) handle(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case modeSink:
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			b.received.Add(int64(n))
			if err != nil {
				return
			}
		}
	case modeEcho:
		_, _ = io.Copy(c, c)
	case modeIdle:
		_, _ = io.Copy(io.Discard, c)
	case modeEchoRW:
		buf := make([]byte, 2048)
		_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
	}
}

func (b *backend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// splice copies both ways between a and b, passing half-closes on, and
// returns when both directions are done.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
			src.Close()
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

// acceptLoop accepts on ln and hands each connection to handle on its own
// goroutine until ln is closed.
func acceptLoop(ln net.Listener, wg *sync.WaitGroup, handle func(net.Conn)) {
	defer wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: back off, don't spin
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			handle(c)
		}()
	}
}
