// Package cnimsg is the wire protocol between the ambit-cni plugin and the
// node daemon's unix socket: one request and one response per connection.
//
// Frame: magic "AMBT" (4 bytes), protocol version (uint16, big endian),
// message type (uint16), payload length (uint32, at most MaxPayload), then
// a JSON payload. The netns of an ADD or CHECK travels beside the request
// as one file descriptor (SCM_RIGHTS), which this package does not handle.
// Everything is bounded and validated before anything acts on it: a
// malformed, oversized, wrong-version or out-of-order message is an error.
package cnimsg

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
)

// Version is the protocol version this package speaks.
const Version uint16 = 1

// MaxPayload bounds a message's JSON payload.
const MaxPayload = 16 << 10

// HeaderLen is the length of the fixed frame header.
const HeaderLen = 12

var magic = [4]byte{'A', 'M', 'B', 'T'}

// Message types.
const (
	TypeRequest  uint16 = 1
	TypeResponse uint16 = 2
)

// Operations of a request.
const (
	OpAdd   = "ADD"
	OpDel   = "DEL"
	OpCheck = "CHECK"
)

// Errors callers branch on.
var (
	ErrMalformed   = errors.New("cnimsg: malformed message")
	ErrTooLarge    = errors.New("cnimsg: message too large")
	ErrVersion     = errors.New("cnimsg: unsupported protocol version")
	ErrUnexpected  = errors.New("cnimsg: unexpected message type")
	ErrInvalidData = errors.New("cnimsg: invalid request")
)

// Pod is what the plugin knows about the pod being wired.
type Pod struct {
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	UID         string       `json:"uid,omitempty"`
	ContainerID string       `json:"containerID"`
	Interface   string       `json:"interface"`
	NetnsPath   string       `json:"netnsPath,omitempty"`
	IPs         []netip.Addr `json:"ips,omitempty"`
	Gateways    []netip.Addr `json:"gateways,omitempty"`
}

// Request is sent by the plugin.
type Request struct {
	Op  string `json:"op"`
	Pod Pod    `json:"pod"`
}

// Response is sent by the daemon.
type Response struct {
	OK       bool   `json:"ok"`
	Enrolled bool   `json:"enrolled"`
	Error    string `json:"error,omitempty"`
}

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	podName  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	idRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	ifRE     = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	uidRE    = regexp.MustCompile(`^[A-Za-z0-9-]{0,64}$`)
)

// Validate checks a request's fields against what the daemon accepts.
func (r *Request) Validate() error {
	switch r.Op {
	case OpAdd, OpCheck:
		if len(r.Pod.IPs) == 0 || len(r.Pod.IPs) > 8 {
			return fmt.Errorf("%w: %d IPs", ErrInvalidData, len(r.Pod.IPs))
		}
		if r.Pod.NetnsPath == "" || len(r.Pod.NetnsPath) > 4096 {
			return fmt.Errorf("%w: netns path", ErrInvalidData)
		}
		if !dnsLabel.MatchString(r.Pod.Namespace) || !podName.MatchString(r.Pod.Name) {
			return fmt.Errorf("%w: pod %q/%q", ErrInvalidData, r.Pod.Namespace, r.Pod.Name)
		}
	case OpDel:
	default:
		return fmt.Errorf("%w: op %q", ErrInvalidData, r.Op)
	}
	if !idRE.MatchString(r.Pod.ContainerID) {
		return fmt.Errorf("%w: container ID %q", ErrInvalidData, r.Pod.ContainerID)
	}
	if !ifRE.MatchString(r.Pod.Interface) {
		return fmt.Errorf("%w: interface %q", ErrInvalidData, r.Pod.Interface)
	}
	if !uidRE.MatchString(r.Pod.UID) {
		return fmt.Errorf("%w: uid %q", ErrInvalidData, r.Pod.UID)
	}
	if len(r.Pod.Gateways) > 4 {
		return fmt.Errorf("%w: %d gateways", ErrInvalidData, len(r.Pod.Gateways))
	}
	for _, a := range append(append([]netip.Addr{}, r.Pod.IPs...), r.Pod.Gateways...) {
		if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
			return fmt.Errorf("%w: address %v", ErrInvalidData, a)
		}
	}
	return nil
}

// Encode frames a message of type typ.
func Encode(typ uint16, v any) ([]byte, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(payload))
	}
	b := make([]byte, HeaderLen, HeaderLen+len(payload))
	copy(b, magic[:])
	binary.BigEndian.PutUint16(b[4:], Version)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint32(b[8:], uint32(len(payload)))
	return append(b, payload...), nil
}

// ParseHeader checks a frame header and returns its type and payload length.
func ParseHeader(h []byte) (typ uint16, n int, err error) {
	if len(h) < HeaderLen || !bytes.Equal(h[:4], magic[:]) {
		return 0, 0, fmt.Errorf("%w: bad header", ErrMalformed)
	}
	if v := binary.BigEndian.Uint16(h[4:]); v != Version {
		return 0, 0, fmt.Errorf("%w: %d (want %d)", ErrVersion, v, Version)
	}
	typ = binary.BigEndian.Uint16(h[6:])
	if typ != TypeRequest && typ != TypeResponse {
		return 0, 0, fmt.Errorf("%w: %d", ErrUnexpected, typ)
	}
	l := binary.BigEndian.Uint32(h[8:])
	if l > MaxPayload {
		return 0, 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, l)
	}
	return typ, int(l), nil
}

// Read reads one frame of type want from r and decodes it into v.
func Read(r io.Reader, want uint16, v any) error {
	var h [HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	typ, n, err := ParseHeader(h[:])
	if err != nil {
		return err
	}
	if typ != want {
		return fmt.Errorf("%w: got %d, want %d", ErrUnexpected, typ, want)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	return decodePayload(payload, v)
}

// DecodeRequest decodes and validates a complete request frame.
func DecodeRequest(b []byte) (*Request, error) {
	typ, n, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if typ != TypeRequest {
		return nil, fmt.Errorf("%w: got %d, want a request", ErrUnexpected, typ)
	}
	if len(b) != HeaderLen+n {
		return nil, fmt.Errorf("%w: frame is %d bytes, header says %d", ErrMalformed, len(b), HeaderLen+n)
	}
	var r Request
	if err := decodePayload(b[HeaderLen:], &r); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

func decodePayload(p []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(p))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if d.More() {
		return fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	return nil
}
