package demo

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/tunnel"
)

func TestLocal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var narration bytes.Buffer
	out, err := Local(ctx, &narration, t.TempDir())
	if err != nil {
		t.Fatalf("%v\n%s", err, narration.String())
	}
	if !strings.Contains(out.Reply, `checkout got "order #42"`) {
		t.Errorf("reply %q: the app did not receive the request", out.Reply)
	}
	if got := out.ServerSawPeer.String(); got != "spiffe://cluster.local/ns/shop/sa/frontend" {
		t.Errorf("server verified client identity %q", got)
	}
	if got := out.ClientSawPeer.String(); got != "spiffe://cluster.local/ns/shop/sa/checkout" {
		t.Errorf("client verified server identity %q", got)
	}
	if !errors.Is(out.DeniedErr, tunnel.ErrDenied) {
		t.Errorf("denied client got %v, want ErrDenied", out.DeniedErr)
	}
	if !errors.Is(out.CARefusedErr, identity.ErrNoCertificate) || !strings.Contains(out.CARefusedErr.Error(), "no_pod_on_node") {
		t.Errorf("CA refusal = %v, want no_pod_on_node", out.CARefusedErr)
	}
	if len(out.Certificates) != 3 {
		t.Errorf("%d certificates, want 3: %+v", len(out.Certificates), out.Certificates)
	}
	var denied, allowed int
	for _, l := range out.AccessLogLines {
		if strings.Contains(l, "outcome=DENY") {
			denied++
		}
		if strings.HasPrefix(l, "outbound") && strings.Contains(l, "outcome=OK") && strings.Contains(l, "sa/frontend") {
			allowed++
		}
	}
	if denied != 2 || allowed != 1 {
		t.Errorf("access log: %d DENY lines (want 2, one per endpoint), %d allowed outbound (want 1):\n%s",
			denied, allowed, strings.Join(out.AccessLogLines, "\n"))
	}
	if strings.Contains(narration.String(), "PRIVATE KEY") {
		t.Error("narration leaks key material")
	}
}
