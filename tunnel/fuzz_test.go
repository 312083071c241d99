package tunnel

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.1:8080", "[fd00::1]:8080", "[::1]:1", "::1:80", "host:80", "[fe80::1%eth0]:80",
		"[::ffff:1.2.3.4]:80", "1.2.3.4:0", "1.2.3.4:65536", "01.2.3.4:80", "1.2.3.4:080", "", "[", "0.0.0.0:80", "224.0.0.1:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseAuthority(s)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() {
			t.Fatalf("accepted %q as %v", s, ap)
		}
		// The canonical form parses back to the same destination.
		back, err := ParseAuthority(FormatAuthority(ap))
		if err != nil || back != ap {
			t.Fatalf("round trip of %q: %v %v", s, back, err)
		}
		if ap.Addr().Is6() && !strings.HasPrefix(FormatAuthority(ap), "[") {
			t.Fatalf("IPv6 authority not bracketed: %s", FormatAuthority(ap))
		}
	})
}

func FuzzParseHeaders(f *testing.F) {
	f.Add(`for="10.1.2.3:5555";host=svc.shop`, "k8s.namespace.name=shop,service.name=web;prop=1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	f.Add(`for="[fd00::1]:80"`, "a=b,c", "00-00000000000000000000000000000000-b7ad6b7169203331-01")
	f.Add(`For=10.0.0.1, for=10.0.0.2`, ",,=,a==b", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	f.Add(`for="[fe80::1%eth0]"`, strings.Repeat("k=v,", 40), "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01")
	f.Fuzz(func(t *testing.T, fwd, bag, tp string) {
		fw := ParseForwarded(fwd)
		if fw.For.Addr().Zone() != "" {
			t.Fatalf("forwarded kept a zone: %v", fw.For)
		}
		if len(fw.Host) > 255 {
			t.Fatalf("forwarded host of %d bytes", len(fw.Host))
		}
		if s := fw.String(); s != "" {
			if again := ParseForwarded(s); again != fw {
				t.Fatalf("forwarded round trip: %+v -> %q -> %+v", fw, s, again)
			}
		}
		b := ParseBaggage(bag)
		if len(b) > maxBaggageMembers {
			t.Fatalf("%d baggage members", len(b))
		}
		for _, m := range b {
			if len(m.Key) > maxBaggageItemLen || len(m.Value) > maxBaggageItemLen || !validToken(m.Key) || !validBaggageValue(m.Value) {
				t.Fatalf("bad member kept: %+v", m)
			}
		}
		if len(b) > 0 {
			if again := ParseBaggage(b.String()); len(again) != len(b) {
				t.Fatalf("baggage round trip: %v -> %v", b, again)
			}
		}
		tr, ok := ParseTraceParent(tp)
		if ok {
			if tr.IsZero() || tr.String() != tp {
				t.Fatalf("traceparent %q parsed to %v", tp, tr)
			}
		} else if !tr.IsZero() {
			t.Fatalf("rejected traceparent returned data")
		}
	})
}

func TestHeaderParsers(t *testing.T) {
	if f := ParseForwarded(`for="[fd00::1]:80";host=web.shop`); f.For.String() != "[fd00::1]:80" || f.Host != "web.shop" {
		t.Errorf("forwarded v6: %+v", f)
	}
	if f := ParseForwarded(`for=10.0.0.1`); f.For.Addr().String() != "10.0.0.1" || f.For.Port() != 0 {
		t.Errorf("forwarded bare IP: %+v", f)
	}
	if f := ParseForwarded(`for=unknown`); f.For.IsValid() {
		t.Errorf("forwarded obfuscated: %+v", f)
	}
	if b := ParseBaggage(strings.Repeat("k=v,", 40)); len(b) != maxBaggageMembers {
		t.Errorf("baggage bound: %d", len(b))
	}
	if _, ok := ParseTraceParent("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"); ok {
		t.Error("zero parent id accepted")
	}
	tp := NewTraceParent()
	if back, ok := ParseTraceParent(tp.String()); !ok || back != tp {
		t.Errorf("NewTraceParent round trip: %v", tp)
	}
	for _, s := range []string{"[::1]:80", "10.0.0.1:1"} {
		if _, err := ParseAuthority(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

// FuzzRequestFields feeds header lists (fields separated by '\x01', name
// and value by '\x02') to the checks of RFC 9113 sections 8.2, 8.3 and 8.5
// and verifies that every accepted list conforms, and that every refusal
// wraps ErrBadRequest.
func FuzzRequestFields(f *testing.F) {
	for _, s := range []string{
		":method\x02CONNECT\x01:authority\x0210.0.0.1:80",
		":method\x02CONNECT\x01:authority\x0210.0.0.1:80\x01te\x02trailers",
		":method\x02CONNECT\x01:authority\x0210.0.0.1:80\x01connection\x02close",
		":method\x02CONNECT\x01x-a\x021\x01:authority\x0210.0.0.1:80",
		":method\x02CONNECT\x01:method\x02CONNECT\x01:authority\x02a",
		":method\x02CONNECT\x01:authority\x02a\x01X-Up\x021",
		":method\x02CONNECT\x01:path\x02/\x01:authority\x02a",
		":method\x02GET\x01:scheme\x02https\x01:path\x02/",
		":method\x02CONNECT\x01:authority\x02a\x01x\x02 v",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var fields []hpack.HeaderField
		for _, kv := range strings.Split(s, "\x01") {
			k, v, _ := strings.Cut(kv, "\x02")
			fields = append(fields, hpack.HeaderField{Name: k, Value: v})
		}
		var chk fieldCheck
		var err error
		for _, hf := range fields {
			if err = chk.add(hf); err != nil {
				break
			}
		}
		if err == nil {
			err = checkRequestFields(fields)
		}
		if err != nil {
			if !errors.Is(err, ErrBadRequest) || !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap ErrBadRequest and errMalformed", err)
			}
			return
		}
		seen := map[string]bool{}
		regular, method, pathOrScheme, authority := false, "", false, false
		for _, hf := range fields {
			name := hf.Name
			if strings.HasPrefix(name, ":") {
				if regular || seen[name] {
					t.Fatalf("accepted pseudo-header %q out of order or twice in %q", name, s)
				}
				seen[name] = true
				name = name[1:]
				switch hf.Name {
				case ":method":
					method = hf.Value
				case ":path", ":scheme":
					pathOrScheme = true
				case ":authority":
					authority = true
				case ":protocol":
				default:
					t.Fatalf("accepted pseudo-header %q", hf.Name)
				}
			} else {
				regular = true
			}
			if name == "" || strings.ToLower(name) != name || strings.ContainsAny(name, " :\x00\r\n\"(),/;<=>?@[\\]{}") {
				t.Fatalf("accepted field name %q", hf.Name)
			}
			if strings.ContainsAny(hf.Value, "\x00\r\n") || strings.HasPrefix(hf.Value, " ") || strings.HasSuffix(hf.Value, "\t") {
				t.Fatalf("accepted value %q", hf.Value)
			}
			switch hf.Name {
			case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
				t.Fatalf("accepted connection-specific field %q", hf.Name)
			case "te":
				if hf.Value != "trailers" {
					t.Fatalf("accepted te: %q", hf.Value)
				}
			}
		}
		if method == "CONNECT" && (pathOrScheme || !authority) {
			t.Fatalf("accepted malformed CONNECT %q", s)
		}
	})
}
