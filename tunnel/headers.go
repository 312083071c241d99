package tunnel

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strings"
)

// Bounds on untrusted header data kept from a request.
const (
	maxHeaderValueLen = 2048 // a longer forwarded/baggage/traceparent value is ignored
	maxBaggageMembers = 16
	maxBaggageItemLen = 256
)

// Forwarded is the part of an RFC 7239 "forwarded" header HBONE uses: the
// original client address (for=) and, for service traffic, host=. It is
// untrusted data: a peer can write anything there.
type Forwarded struct {
	For  netip.AddrPort // invalid when absent or unparseable; a bare IP has port 0
	Host string
}

// String renders f as a header value ("" when empty).
func (f Forwarded) String() string {
	var parts []string
	if f.For.Addr().IsValid() {
		v := f.For.Addr().String()
		if f.For.Port() != 0 {
			v = f.For.String()
		} else if f.For.Addr().Is6() {
			v = "[" + v + "]"
		}
		parts = append(parts, `for="`+v+`"`)
	}
	if f.Host != "" && validToken(f.Host) {
		parts = append(parts, "host="+f.Host)
	}
	return strings.Join(parts, ";")
}

// ParseForwarded reads the first element of a forwarded header value.
// Unknown parameters, malformed pairs and oversize values are ignored; it
// never fails, it just keeps less.
func ParseForwarded(v string) Forwarded {
	var f Forwarded
	if len(v) > maxHeaderValueLen {
		return f
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	for _, pair := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "for":
			if ap, err := netip.ParseAddrPort(val); err == nil && ap.Addr().Zone() == "" {
				f.For = ap
			} else if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(val, "["), "]")); err == nil && a.Zone() == "" {
				f.For = netip.AddrPortFrom(a, 0)
			}
		case "host":
			if len(val) <= 255 && validToken(val) {
				f.Host = val
			}
		}
	}
	return f
}

// BaggageMember is one key=value of a W3C baggage header (properties after
// ';' are dropped).
type BaggageMember struct{ Key, Value string }

// Baggage is a bounded W3C baggage header: at most 16 members, each key and
// value at most 256 bytes. Untrusted data.
type Baggage []BaggageMember

// Get returns the value of key ("" if absent).
func (b Baggage) Get(key string) string {
	for _, m := range b {
		if m.Key == key {
			return m.Value
		}
	}
	return ""
}

// String renders b as a header value.
func (b Baggage) String() string {
	var sb strings.Builder
	for i, m := range b {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(m.Key)
		sb.WriteByte('=')
		sb.WriteString(m.Value)
	}
	return sb.String()
}

// ParseBaggage parses a baggage header value, dropping malformed members
// and everything beyond the bounds.
func ParseBaggage(v string) Baggage {
	if len(v) > maxHeaderValueLen || v == "" {
		return nil
	}
	var b Baggage
	for _, item := range strings.Split(v, ",") {
		if len(b) == maxBaggageMembers {
			break
		}
		if i := strings.IndexByte(item, ';'); i >= 0 {
			item = item[:i]
		}
		k, val, ok := strings.Cut(item, "=")
		if !ok {
			continue
		}
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if k == "" || len(k) > maxBaggageItemLen || len(val) > maxBaggageItemLen || !validToken(k) || !validBaggageValue(val) {
			continue
		}
		b = append(b, BaggageMember{Key: k, Value: val})
	}
	return b
}

// TraceParent is a W3C traceparent header (version 00).
type TraceParent struct {
	TraceID  [16]byte
	ParentID [8]byte
	Flags    byte
}

// IsZero reports whether t is absent.
func (t TraceParent) IsZero() bool { return t == TraceParent{} }

// String renders t as "00-<trace>-<parent>-<flags>" ("" for a zero value).
func (t TraceParent) String() string {
	if t.IsZero() {
		return ""
	}
	return "00-" + hex.EncodeToString(t.TraceID[:]) + "-" + hex.EncodeToString(t.ParentID[:]) + "-" + hex.EncodeToString([]byte{t.Flags})
}

// NewTraceParent returns a fresh random traceparent with flags 00.
func NewTraceParent() TraceParent {
	var t TraceParent
	_, _ = rand.Read(t.TraceID[:])
	_, _ = rand.Read(t.ParentID[:])
	t.TraceID[0] |= 1 // never all zeros
	t.ParentID[0] |= 1
	return t
}

// ParseTraceParent parses a version-00 traceparent; ok is false for
// anything else (wrong length, upper-case or non-hex digits, all-zero IDs).
func ParseTraceParent(v string) (t TraceParent, ok bool) {
	if len(v) != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || v[:2] != "00" {
		return TraceParent{}, false
	}
	if !lowerHex(v[3:35]) || !lowerHex(v[36:52]) || !lowerHex(v[53:55]) {
		return TraceParent{}, false
	}
	_, _ = hex.Decode(t.TraceID[:], []byte(v[3:35]))
	_, _ = hex.Decode(t.ParentID[:], []byte(v[36:52]))
	var f [1]byte
	_, _ = hex.Decode(f[:], []byte(v[53:55]))
	t.Flags = f[0]
	if t.TraceID == [16]byte{} || t.ParentID == [8]byte{} {
		return TraceParent{}, false
	}
	return t, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validToken: RFC 7230 tchar, plus ':' '[' ']' for host values with ports.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~:[]", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validBaggageValue: W3C baggage-octet (printable ASCII except space, '"',
// ',', ';', '\\').
func validBaggageValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}
