package cnimsg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	r := validRequest()
	b, err := Encode(TypeRequest, r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Pod.Name != "web-0" || got.Pod.IPs[0] != r.Pod.IPs[0] || got.Op != OpAdd {
		t.Errorf("got %+v", got)
	}
	var resp Response
	rb, _ := Encode(TypeResponse, Response{OK: true, Enrolled: true})
	if err := Read(bytes.NewReader(rb), TypeResponse, &resp); err != nil || !resp.OK || !resp.Enrolled {
		t.Errorf("response %+v %v", resp, err)
	}
}

func TestBadInput(t *testing.T) {
	good, _ := Encode(TypeRequest, validRequest())
	withVersion := func(v uint16) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint16(b[4:], v)
		return b
	}
	oversized := bytes.Clone(good[:HeaderLen])
	binary.BigEndian.PutUint32(oversized[8:], MaxPayload+1)
	resp, _ := Encode(TypeResponse, Response{OK: true})
	mod := func(f func(*Request)) []byte {
		r := validRequest()
		f(&r)
		b, _ := Encode(TypeRequest, r)
		return b
	}
	cases := map[string]struct {
		in   []byte
		want error
	}{
		"empty":            {nil, ErrMalformed},
		"bad magic":        {append([]byte("XXXX"), good[4:]...), ErrMalformed},
		"version 2":        {withVersion(2), ErrVersion},
		"oversized":        {oversized, ErrTooLarge},
		"truncated":        {good[:len(good)-3], ErrMalformed},
		"trailing":         {append(bytes.Clone(good), '}'), ErrMalformed},
		"response first":   {resp, ErrUnexpected},
		"unknown field":    {frame(t, `{"op":"ADD","pod":{},"extra":1}`), ErrMalformed},
		"not json":         {frame(t, `not json`), ErrMalformed},
		"unknown op":       {mod(func(r *Request) { r.Op = "EXEC" }), ErrInvalidData},
		"no IPs":           {mod(func(r *Request) { r.Pod.IPs = nil }), ErrInvalidData},
		"loopback IP":      {mod(func(r *Request) { r.Pod.IPs = []netip.Addr{netip.MustParseAddr("127.0.0.1")} }), ErrInvalidData},
		"path in ID":       {mod(func(r *Request) { r.Pod.ContainerID = "../../etc" }), ErrInvalidData},
		"long interface":   {mod(func(r *Request) { r.Pod.Interface = strings.Repeat("e", 16) }), ErrInvalidData},
		"bad namespace":    {mod(func(r *Request) { r.Pod.Namespace = "Shop!" }), ErrInvalidData},
		"too many gateway": {mod(func(r *Request) { r.Pod.Gateways = make([]netip.Addr, 5) }), ErrInvalidData},
	}
	for name, c := range cases {
		if _, err := DecodeRequest(c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func frame(t *testing.T, payload string) []byte {
	b := make([]byte, HeaderLen)
	copy(b, "AMBT")
	binary.BigEndian.PutUint16(b[4:], Version)
	binary.BigEndian.PutUint16(b[6:], TypeRequest)
	binary.BigEndian.PutUint32(b[8:], uint32(len(payload)))
	return append(b, payload...)
}
