package tunnel

import (
	"os"
	"sync"
	"time"
)

// chunkSize is the unit of a stream's receive queue. Received DATA is
// copied into pooled chunks and handed to the reader, so a quiet stream
// holds no chunk at all.
const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// copyPools hold splice buffers by size.
var copyPools sync.Map // int -> *sync.Pool

func getCopyBuf(size int) *[]byte {
	p, ok := copyPools.Load(size)
	if !ok {
		p, _ = copyPools.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	}
	return p.(*sync.Pool).Get().(*[]byte)
}

func putCopyBuf(size int, b *[]byte) {
	if p, ok := copyPools.Load(size); ok {
		p.(*sync.Pool).Put(b)
	}
}

type chunk struct {
	buf  *[]byte
	r, w int
}

func (c *chunk) data() []byte { return (*c.buf)[c.r:c.w] }

// chunkQueue is a FIFO of received bytes in pooled chunks.
type chunkQueue struct {
	q []*chunk
	n int
}

func (q *chunkQueue) len() int { return q.n }

// push copies p into the queue.
func (q *chunkQueue) push(p []byte) {
	q.n += len(p)
	if len(q.q) > 0 {
		t := q.q[len(q.q)-1]
		k := copy((*t.buf)[t.w:], p)
		t.w += k
		p = p[k:]
	}
	for len(p) > 0 {
		c := &chunk{buf: chunkPool.Get().(*[]byte)}
		c.w = copy(*c.buf, p)
		p = p[c.w:]
		q.q = append(q.q, c)
	}
}

// read copies from the head of the queue into p.
func (q *chunkQueue) read(p []byte) int {
	n := 0
	for len(p) > 0 && len(q.q) > 0 {
		h := q.q[0]
		k := copy(p, h.data())
		h.r += k
		n += k
		p = p[k:]
		if h.r == h.w {
			q.dropHead()
		}
	}
	q.n -= n
	return n
}

// pop detaches the head chunk; the caller releases it.
func (q *chunkQueue) pop() *chunk {
	h := q.q[0]
	q.q[0] = nil
	q.q = q.q[1:]
	if len(q.q) == 0 {
		q.q = nil
	}
	q.n -= h.w - h.r
	return h
}

func (q *chunkQueue) dropHead() {
	releaseChunk(q.pop())
}

// clear releases everything and returns how many bytes were dropped.
func (q *chunkQueue) clear() int {
	n := q.n
	for _, c := range q.q {
		releaseChunk(c)
	}
	q.q, q.n = nil, 0
	return n
}

func releaseChunk(c *chunk) {
	chunkPool.Put(c.buf)
	c.buf = nil
}

// deadline is a settable expiry signalled by closing a channel (the shape
// net.Pipe uses). The zero value has no deadline.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when expired; nil until first needed
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait until it closed the channel
	}
	d.timer = nil
	closed := false
	if d.cancel != nil {
		select {
		case <-d.cancel:
			closed = true
		default:
		}
	}
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if closed || d.cancel == nil {
		d.cancel = make(chan struct{})
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.cancel)
		return
	}
	ch := d.cancel
	d.timer = time.AfterFunc(dur, func() { close(ch) })
}

// wait returns a channel closed when the deadline passes (nil: never).
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

var errDeadline = os.ErrDeadlineExceeded

// adaptiveBuf hands a copy loop its read buffers: a small one while the
// source is quiet, so an idle connection holds no pooled buffer, and a
// pooled CopyBufferSize one while reads keep filling the buffer, given back
// once a read comes back less than half full. headroom bytes at the front
// of every buffer are the caller's (a frame header written in place).
type adaptiveBuf struct {
	size, headroom int
	small          []byte
	big            *[]byte
}

func newAdaptiveBuf(set Settings, headroom int) adaptiveBuf {
	a := adaptiveBuf{size: set.CopyBufferSize, headroom: headroom}
	if set.IdleReadSize > 0 {
		a.small = make([]byte, headroom+set.IdleReadSize)
	}
	return a
}

// next is the buffer for the next read, headroom included.
func (a *adaptiveBuf) next() []byte {
	switch {
	case a.big != nil:
		return *a.big
	case a.small != nil:
		return a.small
	}
	a.big = getCopyBuf(a.size)
	return *a.big
}

// observe adapts to a read of n bytes into buf, the last next().
func (a *adaptiveBuf) observe(buf []byte, n int) {
	if a.small == nil {
		return // no idle buffer: always the big one
	}
	room := len(buf) - a.headroom
	if a.big == nil && n == room {
		a.big = getCopyBuf(a.size)
	} else if a.big != nil && n < room/2 {
		a.release()
	}
}

// release gives the pooled buffer back, if one is held.
func (a *adaptiveBuf) release() {
	if a.big != nil {
		putCopyBuf(a.size, a.big)
		a.big = nil
	}
}
