package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// Splice copies a->b and b->a until both directions end, carrying
// half-closes (EOF from one side becomes CloseWrite on the other: FIN <->
// END_STREAM) and aborts (an error on either side resets both: TCP RST <->
// RST_STREAM). Cancelling ctx aborts both. It closes a and b before
// returning and reports the bytes moved each way and the first error.
//
// A server's RST_STREAM(NO_ERROR) after its complete response (RFC 9113
// section 8.1) is no abort: the socket still gets every byte and a FIN, and
// what it sends afterwards is read and dropped until its EOF.
//
// Copying uses no buffer while a side is quiet: a *Stream source is drained
// straight from its receive queue, and other sources are read through a
// small buffer that grows to a pooled one only while bytes flow (see
// Settings.IdleReadSize).
func Splice(ctx context.Context, a, b net.Conn, set Settings) (aToB, bToA int64, err error) {
	set = set.withDefaults()
	var once sync.Once
	abortBoth := func() {
		once.Do(func() {
			abortConn(a)
			abortConn(b)
		})
	}
	stop := context.AfterFunc(ctx, abortBoth)
	defer stop()

	type result struct {
		n   int64
		err error
	}
	// A stream -> socket direction runs detached (see Stream.spliceTo): an
	// idle spliced connection keeps one goroutine, not two.
	var abErr, baErr error
	res := make(chan result, 1)
	finish := func(n int64, err error) {
		if err != nil {
			abortBoth()
		}
		res <- result{n, err}
	}
	sa, aStream := a.(*Stream)
	sb, bStream := b.(*Stream)
	switch {
	case aStream && !bStream:
		sa.spliceTo(b, finish)
		bToA, baErr = pipe(a, b, set)
		if baErr != nil {
			abortBoth()
		}
		r := <-res
		aToB, abErr = r.n, r.err
	case bStream && !aStream:
		sb.spliceTo(a, finish)
		aToB, abErr = pipe(b, a, set)
		if abErr != nil {
			abortBoth()
		}
		r := <-res
		bToA, baErr = r.n, r.err
	default:
		go func() {
			n, err := pipe(b, a, set)
			finish(n, err)
		}()
		bToA, baErr = pipe(a, b, set)
		if baErr != nil {
			abortBoth()
		}
		r := <-res
		aToB, abErr = r.n, r.err
	}
	_ = a.Close()
	_ = b.Close()
	err = abErr
	if err == nil {
		err = baErr
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return aToB, bToA, err
}

// pipe copies src to dst and half-closes dst when src ends cleanly.
func pipe(dst, src net.Conn, set Settings) (int64, error) {
	var n int64
	var err error
	switch {
	case isStream(src):
		n, err = src.(*Stream).WriteTo(dst)
	case isStream(dst):
		n, err = dst.(*Stream).ReadFrom(src)
		if errors.Is(err, errStopSending) {
			// The server answered in full and stopped the request with
			// RST_STREAM(NO_ERROR) (RFC 9113 section 8.1): what src still
			// sends has no reader. Read it to EOF and drop it, so that src
			// is closed with a FIN once it is done, never with a reset that
			// could destroy the answer still on its way to it.
			_, err = io.Copy(io.Discard, src)
		}
	default:
		n, err = copyAdaptive(dst, src, set)
	}
	if err != nil {
		return n, err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			return n, err
		}
	}
	return n, nil
}

func isStream(c net.Conn) bool { _, ok := c.(*Stream); return ok }

// abortConn ends c abruptly: RST_STREAM for a stream, RST (linger 0) for a
// TCP socket.
func abortConn(c net.Conn) {
	switch c := c.(type) {
	case *Stream:
		_ = c.Reset()
		return
	case interface{ SetLinger(int) error }:
		_ = c.SetLinger(0)
	}
	_ = c.Close()
}

// copyAdaptive copies src to dst, waiting for input on a small buffer and
// switching to a pooled large one while data keeps coming.
func copyAdaptive(dst io.Writer, src io.Reader, set Settings) (int64, error) {
	bufs := newAdaptiveBuf(set.withDefaults(), 0)
	defer bufs.release()
	var total int64
	for {
		buf := bufs.next()
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			if w != n {
				return total, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
		bufs.observe(buf, n)
	}
}
