package tunnel

import (
	"fmt"
	"time"

	"golang.org/x/net/http2"
)

// startKeepalive arms the PING timer: a connection quiet for
// KeepaliveInterval gets a PING; one that then stays silent for
// KeepaliveTimeout is dead.
func (c *conn) startKeepalive() {
	if c.set.KeepaliveInterval < 0 {
		return
	}
	tick := min(c.set.KeepaliveInterval, c.set.KeepaliveTimeout) / 4
	tick = max(tick, time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.kaTimer = time.AfterFunc(tick, func() { c.keepalive(tick) })
}

func (c *conn) keepalive(tick time.Duration) {
	now := time.Now()
	if sent := c.pingSentAt.Load(); sent != 0 {
		if now.Sub(time.Unix(0, sent)) >= c.set.KeepaliveTimeout {
			c.ctr.keepaliveDeaths.Add(1)
			c.log.Warn("hbone: peer did not answer PING, closing connection", "timeout", c.set.KeepaliveTimeout, "peer", c.peer.String())
			c.abort(fmt.Errorf("%w: no frame for %v after PING", ErrKeepalive, c.set.KeepaliveTimeout))
			return
		}
	} else if now.Sub(time.Unix(0, c.lastRead.Load())) >= c.set.KeepaliveInterval {
		c.pingSentAt.Store(now.UnixNano())
		var data [8]byte
		data[0] = 'k'
		go func() { _ = c.writeFrame(func(fr *http2.Framer) error { return fr.WritePing(false, data) }) }()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.kaTimer.Reset(tick)
	}
}
