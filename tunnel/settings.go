package tunnel

import "time"

// Settings tunes the HTTP/2 and copy machinery. Every field is optional; a
// zero value means the default written beside it. The defaults were chosen
// with the benchmarks in bench_test.go (see the package documentation).
type Settings struct {
	// StreamWindow is the receive flow-control window of one CONNECT stream.
	// Default 4 MiB: smaller windows cap one stream's throughput at
	// window/RTT.
	StreamWindow uint32
	// ConnWindow is the receive window of a whole HTTP/2 connection.
	// Default 16 MiB (4x the stream window, so one slow stream cannot starve
	// the others).
	ConnWindow uint32
	// MaxFrameSize is the largest DATA frame this end accepts (and the
	// largest it sends, bounded by the peer's setting). Default 64 KiB.
	MaxFrameSize uint32
	// MaxConcurrentStreams is what a server advertises. Default 200.
	MaxConcurrentStreams uint32
	// MaxStreamsPerConn caps the streams a client opens on one connection
	// (further bounded by the peer's MAX_CONCURRENT_STREAMS). Default 100.
	MaxStreamsPerConn uint32
	// MaxHeaderListSize bounds a request's or response's decoded header
	// list. Default 16 KiB.
	MaxHeaderListSize uint32
	// CopyBufferSize is the pooled buffer a splice reads into while bytes
	// flow. Default 64 KiB (a frame of 64 KiB - 9 payload fills four TLS
	// records exactly).
	CopyBufferSize int
	// IdleReadSize is the small per-direction buffer a splice waits on while
	// a connection is quiet, so idle connections hold no pooled buffer.
	// Default 2 KiB (a 1 KiB request/response fits one read and one frame);
	// negative disables it (always use the big buffer).
	IdleReadSize int
	// WriteTimeout bounds one write to the tunnel connection; a peer that
	// stops reading for this long loses its connection. Default 30 s.
	WriteTimeout time.Duration
	// KeepaliveInterval is how often an HTTP/2 PING probes a quiet
	// connection. Default 10 s; negative disables keepalive.
	KeepaliveInterval time.Duration
	// KeepaliveTimeout: a connection that has sent a PING and received
	// nothing for this long is dead and closed. Default 20 s.
	KeepaliveTimeout time.Duration
	// ConnectTimeout bounds TCP dial plus TLS and HTTP/2 handshakes (on the
	// server: the handshake of an accepted connection). Default 10 s.
	ConnectTimeout time.Duration
	// AllowTLS12 also accepts TLS 1.2 with ECDHE and AES-GCM. Default off:
	// TLS 1.3 only.
	AllowTLS12 bool
	// FIPS restricts both ends to the FIPS mode profile
	// (identity.RestrictTLSToFIPS): TLS 1.3 with AES-GCM, key exchange on
	// P-256 or P-384 only, peer certificates with approved keys. It does not
	// put the Go runtime in FIPS 140-3 mode (GODEBUG=fips140=on does); the
	// daemon refuses --fips without it. Excludes AllowTLS12.
	FIPS bool
	// Limits bound per-connection floods (see Limits). Optional.
	Limits Limits
}

// Defaults.
const (
	DefaultStreamWindow         = 4 << 20
	DefaultConnWindow           = 16 << 20
	DefaultMaxFrameSize         = 64 << 10
	DefaultMaxConcurrentStreams = 200
	DefaultMaxStreamsPerConn    = 100
	DefaultMaxHeaderListSize    = 16 << 10
	DefaultCopyBufferSize       = 64 << 10
	DefaultIdleReadSize         = 2048
	DefaultWriteTimeout         = 30 * time.Second
	DefaultKeepaliveInterval    = 10 * time.Second
	DefaultKeepaliveTimeout     = 20 * time.Second
	DefaultConnectTimeout       = 10 * time.Second
	DefaultIdleTimeout          = 5 * time.Minute

	minFrameSize = 16 << 10
	maxFrameSize = 1<<24 - 1
	maxWindow    = 1<<31 - 1
)

func (s Settings) withDefaults() Settings {
	if s.StreamWindow == 0 {
		s.StreamWindow = DefaultStreamWindow
	}
	if s.StreamWindow > maxWindow {
		s.StreamWindow = maxWindow
	}
	if s.ConnWindow == 0 {
		s.ConnWindow = DefaultConnWindow
	}
	if s.ConnWindow > maxWindow {
		s.ConnWindow = maxWindow
	}
	if s.ConnWindow < 65535 {
		s.ConnWindow = 65535
	}
	if s.MaxFrameSize == 0 {
		s.MaxFrameSize = DefaultMaxFrameSize
	}
	s.MaxFrameSize = min(max(s.MaxFrameSize, minFrameSize), maxFrameSize)
	if s.MaxConcurrentStreams == 0 {
		s.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if s.MaxStreamsPerConn == 0 {
		s.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if s.MaxHeaderListSize == 0 {
		s.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if s.CopyBufferSize <= 0 {
		s.CopyBufferSize = DefaultCopyBufferSize
	}
	if s.IdleReadSize == 0 {
		s.IdleReadSize = DefaultIdleReadSize
	}
	if s.WriteTimeout <= 0 {
		s.WriteTimeout = DefaultWriteTimeout
	}
	if s.KeepaliveInterval == 0 {
		s.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if s.KeepaliveTimeout <= 0 {
		s.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if s.ConnectTimeout <= 0 {
		s.ConnectTimeout = DefaultConnectTimeout
	}
	s.Limits = s.Limits.withDefaults()
	return s
}
