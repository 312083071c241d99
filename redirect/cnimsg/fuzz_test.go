package cnimsg

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func validRequest() Request {
	return Request{Op: OpAdd, Pod: Pod{Namespace: "shop", Name: "web-0", UID: "0a1b-2c", ContainerID: "abc123",
		Interface: "eth0", NetnsPath: "/var/run/netns/cni-1", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.5")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.1.0.1")}}}
}

// FuzzDecodeRequest: any input either decodes to a request that passes
// validation and re-encodes to an equivalent frame, or fails with one of
// the package's errors; never a panic.
func FuzzDecodeRequest(f *testing.F) {
	r := validRequest()
	good, _ := Encode(TypeRequest, r)
	f.Add(good)
	del, _ := Encode(TypeRequest, Request{Op: OpDel, Pod: Pod{ContainerID: "x", Interface: "eth0"}})
	f.Add(del)
	resp, _ := Encode(TypeResponse, Response{OK: true})
	f.Add(resp)
	f.Add([]byte("AMBT\x00\x02\x00\x01\x00\x00\x00\x02{}"))
	f.Add([]byte("AMBT\x00\x01\x00\x01\xff\xff\xff\xff"))
	f.Add(good[:20])
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrVersion) &&
				!errors.Is(err, ErrUnexpected) && !errors.Is(err, ErrInvalidData) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("decoded request fails validation: %v", err)
		}
		again, err := Encode(TypeRequest, req)
		if err != nil {
			t.Fatal(err)
		}
		req2, err := DecodeRequest(again)
		if err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		a, _ := Encode(TypeRequest, req2)
		if !bytes.Equal(a, again) {
			t.Fatalf("not stable: %s vs %s", a, again)
		}
	})
}
