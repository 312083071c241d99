// Copying between two plaintext TCP sockets.

package tunnel

import (
	"io"
	"net"
)

// spliceSockets switches copyPlain's kernel splice on (a variable so that
// benchmarks can compare both in one process).
var spliceSockets = true

// spliceChunk is how much one splice(2) run may move before copyPlain
// goes back to a small read: the run holds a pipe (two descriptors) while
// it waits for its source, so a connection that falls quiet mid-run keeps
// one only until its next bytes, and a quiet one never holds one.
const spliceChunk = 4 << 20

// copyPlain is copyAdaptive, except that between two TCP sockets, once
// bytes flow (a small read came back full), it lets the kernel move them
// with splice(2) (net.TCPConn.ReadFrom) in runs of spliceChunk: no copy
// through user space and one wake-up per pipe-full instead of per buffer.
func copyPlain(dst io.Writer, src io.Reader, set Settings) (int64, error) {
	td, ok1 := dst.(*net.TCPConn)
	ts, ok2 := src.(*net.TCPConn)
	if !spliceSockets || !ok1 || !ok2 || set.IdleReadSize <= 0 {
		return copyAdaptive(dst, src, set)
	}
	small := make([]byte, set.IdleReadSize)
	var total int64
	for {
		n, rerr := ts.Read(small)
		if n > 0 {
			w, werr := td.Write(small[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
		if n < len(small) {
			continue // quiet or small messages: stay on the small buffer
		}
		lr := &io.LimitedReader{R: ts, N: spliceChunk}
		k, err := td.ReadFrom(lr)
		total += k
		if err != nil {
			return total, err
		}
		if lr.N > 0 {
			return total, nil // the run ended early: EOF
		}
	}
}
