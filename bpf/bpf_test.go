package bpf

import (
	"net/netip"
	"os"
	"testing"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads eBPF programs")
	}
}

// The kernels ambit targets have every feature; a missing one fails here
// rather than skipping, since the capture cannot work without it.
func TestCheckFeatures(t *testing.T) {
	needRoot(t)
	if err := CheckFeatures(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadCapture(t *testing.T) {
	needRoot(t)
	c, err := LoadCapture(CaptureOptions{Mark: 0x100, MarkMask: 0x100})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer c.Close()
	for name, p := range map[string]any{"connect4": c.Connect4, "connect6": c.Connect6, "sockops": c.SockOps, "pods": c.Pods, "origdst": c.OrigDst} {
		if p == nil {
			t.Errorf("%s not loaded", name)
		}
	}
	if _, err := LoadCapture(CaptureOptions{}); err == nil {
		t.Error("zero mark mask accepted")
	}
}

func TestLoadPod(t *testing.T) {
	needRoot(t)
	cfg := PodConfig{
		Own:        []netip.Addr{netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("fd00::2")},
		Probe:      []netip.Addr{netip.MustParseAddr("10.1.0.1")},
		InExclude:  []uint16{22},
		OutExclude: []uint16{53},
		Mark:       0x100, MarkMask: 0x100,
	}
	p, err := LoadPod(cfg, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
	if p.Listeners.MaxEntries() != 3 {
		t.Errorf("listeners has %d slots, want 3", p.Listeners.MaxEntries())
	}
	cfg.Own = make([]netip.Addr, 9)
	if _, err := LoadPod(cfg, nil); err == nil {
		t.Error("9 pod addresses accepted")
	}
}

func TestAddrWordsRoundTrip(t *testing.T) {
	for _, s := range []string{"10.1.2.3", "fd00::1", "::ffff:1.2.3.4", "::1"} {
		a := netip.MustParseAddr(s)
		got := wordsAddr(addrWords(a))
		if got != netip.AddrFrom16(a.As16()) {
			t.Errorf("%s round-trips to %s", s, got)
		}
	}
	o := OrigDst{Port: 0x5000, Family: 2} // port 80 in network order
	o.Addr.W = addrWords(netip.MustParseAddr("10.0.0.1"))
	if got := o.AddrPort().String(); got != "10.0.0.1:80" {
		t.Errorf("OrigDst = %s", got)
	}
}
