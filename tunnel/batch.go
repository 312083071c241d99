// Gathering the TLS records of one large frame into one write.

package tunnel

import (
	"net"
	"sync"
)

// recordBatcher sits under a tls.Conn. crypto/tls writes each record (at
// most 16 KiB of payload) with its own Write, so a DATA frame of a 32 KiB
// read costs two write(2) calls and wakes the peer twice; between begin
// and flush the records are gathered and sent with one. Only frames larger
// than one record are batched (small ones gain nothing from a copy).
//
// Records crypto/tls writes by itself (a KeyUpdate answered from the read
// side) may land between begin and flush: they are gathered in order,
// and a write that arrives during flush waits for it, so the record
// sequence on the wire is the one crypto/tls produced.
type recordBatcher struct {
	net.Conn
	mu  sync.Mutex
	on  bool
	buf *[]byte
}

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 2*tlsRecordLen+256); return &b }}

func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on {
		*b.buf = append(*b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// begin starts gathering; the caller holds the connection's write lock.
func (b *recordBatcher) begin() {
	b.mu.Lock()
	b.on = true
	b.buf = batchPool.Get().(*[]byte)
	b.mu.Unlock()
}

// flush sends what was gathered with one write and stops gathering. The
// buffer goes back to the pool: an idle connection holds none.
func (b *recordBatcher) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on = false
	var err error
	if len(*b.buf) > 0 {
		_, err = b.Conn.Write(*b.buf)
	}
	*b.buf = (*b.buf)[:0]
	batchPool.Put(b.buf)
	b.buf = nil
	return err
}

// batchRecords switches the batching on (a variable so that benchmarks can
// compare both in one process).
var batchRecords = true
