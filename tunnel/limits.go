// Per-connection bounds on what a peer can make an endpoint do for free:
// the flood guards behind GOAWAY(ENHANCE_YOUR_CALM). docs/hbone.md
// ("Hostile peers") explains the choices and the figures.

package tunnel

import (
	"fmt"
	"io"
	"time"

	"golang.org/x/net/http2"
)

// Rate is a token bucket: Burst events at once, then PerSecond on average.
// A zero Rate takes the default of its field; a negative Burst disables
// the bound.
type Rate struct {
	Burst     int
	PerSecond float64
}

// Limits bound, per HTTP/2 connection, frames that cost the receiver work
// without carrying the peer's data forward. A peer that exceeds one gets
// GOAWAY(ENHANCE_YOUR_CALM) and loses the connection; Stats.CalmCloses and
// Hooks.OnRefuse count it. Every field is optional.
type Limits struct {
	// EarlyResets: streams the peer resets before the server answered them
	// (the handler is still authorizing or dialing: CVE-2023-44487's rapid
	// reset). Default burst 200, 20/s.
	EarlyResets Rate
	// LocalResets: streams the server refuses or resets because of the
	// peer (over MAX_CONCURRENT_STREAMS, malformed requests). Default burst
	// 200, 20/s.
	LocalResets Rate
	// Settings: SETTINGS frames (each must be acknowledged). Default burst
	// 100, 10/s.
	Settings Rate
	// Pings: PING frames (each must be answered). Default burst 100, 10/s.
	Pings Rate
	// EmptyFrames: frames that change nothing: DATA without payload or
	// END_STREAM, WINDOW_UPDATE or RST_STREAM on a closed stream, PRIORITY,
	// unknown frame types. Default burst 1000, 1000/s.
	EmptyFrames Rate
	// HeaderFrames: HEADERS plus CONTINUATION frames of one header block
	// (CVE-2024-27316's endless CONTINUATION). Default 16.
	HeaderFrames int
}

// Defaults of Limits.
var (
	DefaultEarlyResets  = Rate{Burst: 200, PerSecond: 20}
	DefaultLocalResets  = Rate{Burst: 200, PerSecond: 20}
	DefaultSettingsRate = Rate{Burst: 100, PerSecond: 10}
	DefaultPingRate     = Rate{Burst: 100, PerSecond: 10}
	DefaultEmptyFrames  = Rate{Burst: 1000, PerSecond: 1000}
)

// DefaultHeaderFrames is the default of Limits.HeaderFrames.
const DefaultHeaderFrames = 16

func (l Limits) withDefaults() Limits {
	def := func(r *Rate, d Rate) {
		if r.Burst == 0 {
			*r = d
		}
		if r.PerSecond <= 0 {
			r.PerSecond = d.PerSecond
		}
	}
	def(&l.EarlyResets, DefaultEarlyResets)
	def(&l.LocalResets, DefaultLocalResets)
	def(&l.Settings, DefaultSettingsRate)
	def(&l.Pings, DefaultPingRate)
	def(&l.EmptyFrames, DefaultEmptyFrames)
	if l.HeaderFrames <= 0 {
		l.HeaderFrames = DefaultHeaderFrames
	}
	return l
}

// bucket is one token bucket; not safe for concurrent use (the read loop
// owns the connection's buckets).
type bucket struct {
	rate   Rate
	tokens float64
	last   time.Time
}

func newBucket(r Rate) bucket { return bucket{rate: r, tokens: float64(r.Burst)} }

// take spends one token; false when the bucket is empty.
func (b *bucket) take(now time.Time) bool {
	if b.rate.Burst < 0 {
		return true
	}
	if !b.last.IsZero() {
		b.tokens = min(float64(b.rate.Burst), b.tokens+now.Sub(b.last).Seconds()*b.rate.PerSecond)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Refusal reasons, as reported by Hooks.OnRefuse (a metrics label).
const (
	RefuseRapidReset     = "rapid_reset"      // too many streams reset before their answer
	RefuseResetFlood     = "reset_flood"      // too many streams refused or reset by the server
	RefuseSettingsFlood  = "settings_flood"   // too many SETTINGS frames
	RefusePingFlood      = "ping_flood"       // too many PING frames
	RefuseEmptyFlood     = "empty_frames"     // too many frames that change nothing
	RefuseHeaderFlood    = "header_flood"     // a header block of too many frames
	RefuseHandshakes     = "handshakes"       // server-wide cap on TLS handshakes in progress
	RefuseIdentityStream = "identity_streams" // the source identity's stream cap on this node
	RefuseLoop           = "loop"             // CONNECT to one of the daemon's own ports
	RefuseMalformed      = "malformed"        // malformed request (RFC 9113 section 8.1.1)
	RefuseTLSAlgorithms  = "tls_algorithms"   // the client offers no version, suite, group or key the TLS profile allows
)

// floods are a connection's buckets.
type floods struct {
	earlyResets, localResets, settings, pings, empty bucket
}

func newFloods(l Limits) floods {
	return floods{
		earlyResets: newBucket(l.EarlyResets),
		localResets: newBucket(l.LocalResets),
		settings:    newBucket(l.Settings),
		pings:       newBucket(l.Pings),
		empty:       newBucket(l.EmptyFrames),
	}
}

// errCalm is returned by the read loop's frame handlers when a flood guard
// trips: the connection ends with GOAWAY(ENHANCE_YOUR_CALM).
type errCalm struct{ reason string }

func (e errCalm) Error() string { return "peer flood: " + e.reason }

// spend takes a token from b (read loop only); an empty bucket is errCalm.
func (c *conn) spend(b *bucket, reason string) error {
	if b.take(c.now()) {
		return nil
	}
	return errCalm{reason}
}

// calm ends the connection for a flood: counter, log line naming the
// peer, GOAWAY(ENHANCE_YOUR_CALM).
func (c *conn) calm(reason string) {
	c.ctr.calmCloses.Add(1)
	c.log.Warn("hbone: peer flood, closing connection with ENHANCE_YOUR_CALM", "reason", reason,
		"peer", c.peer.String(), "peer_addr", addrPortOf(c.nc.RemoteAddr()))
	if c.onRefuse != nil {
		c.onRefuse(reason)
	}
	c.mu.Lock()
	last := c.lastPeerID
	c.mu.Unlock()
	c.goAwayAndLinger(last, http2.ErrCodeEnhanceYourCalm, fmt.Errorf("%w: %s (ENHANCE_YOUR_CALM)", ErrProtocol, reason))
}

// lingerTime and lingerBytes bound how long, and how much, the read loop
// discards after a GOAWAY that ends a connection.
const (
	lingerTime  = time.Second
	lingerBytes = 1 << 20
)

// goAwayAndLinger sends GOAWAY, closes the write side and fails every
// stream, then discards what the peer still sends for a bounded time
// before closing. Closing at once with unread data would make the kernel
// send a TCP reset, which can destroy the GOAWAY before the peer reads it.
// Read loop only.
func (c *conn) goAwayAndLinger(last uint32, code http2.ErrCode, err error) {
	c.wmu.Lock()
	_ = c.writeLocked(func(fr *http2.Framer) error { return fr.WriteGoAway(last, code, nil) })
	if c.werr == nil {
		c.werr = err
		if c.tc != nil {
			_ = c.tc.CloseWrite()
		}
	}
	c.wmu.Unlock()
	c.mu.Lock()
	c.lingering = true
	c.mu.Unlock()
	c.abort(err)
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, c.nc, lingerBytes)
	_ = c.nc.Close()
}
