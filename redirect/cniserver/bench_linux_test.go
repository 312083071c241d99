package cniserver

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/redirect/nstest"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
)

// timingExec is the runtime's plugin executor, timing ambit-cni's ADD: from
// the runtime starting the plugin process to the plugin returning, which
// it does only after the daemon has set up capture and acknowledged.
type timingExec struct {
	invoke.DefaultExec
	adds []time.Duration
}

func (e *timingExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	start := time.Now()
	out, err := e.DefaultExec.ExecPlugin(ctx, path, stdin, env)
	if filepath.Base(path) == "ambit-cni" && slices.Contains(env, "CNI_COMMAND=ADD") && err == nil {
		e.adds = append(e.adds, time.Since(start))
	}
	return out, err
}

// BenchmarkEnrol enrols b.N pods through the real plugin path (libcni
// running bridge + host-local + ambit-cni, the daemon applying capture) and
// reports p50/p99 of ambit-cni's ADD (no certificate fetch). Run with
// -benchtime=100x for the 100-pod figure.
func BenchmarkEnrol(b *testing.B) {
	n := newNode(b, enrolAll)
	te := &timingExec{DefaultExec: invoke.DefaultExec{RawExec: &invoke.RawExec{}}}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{cniBins(b)}, filepath.Join(n.dir, "cache"), te)
	list := n.conflist("1.0.0", n.socket)
	ctx := context.Background()
	var rts []*libcni.RuntimeConf
	b.Cleanup(func() {
		for _, rt := range rts {
			n.cni.DelNetworkList(ctx, list, rt)
		}
	})
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		_, path := nstest.NewNetns(b, n.dir, fmt.Sprintf("pod%d", i))
		rt := n.rt(fmt.Sprintf("bench%04d", i), path)
		b.StartTimer()
		if _, err := n.cni.AddNetworkList(ctx, list, rt); err != nil {
			b.Fatalf("ADD %d: %v", i, err)
		}
		rts = append(rts, rt)
	}
	b.StopTimer()
	slices.Sort(te.adds)
	pct := func(p float64) time.Duration { return te.adds[int(p*float64(len(te.adds)-1))] }
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	st, _ := n.m.State()
	if got := strings.Count(st, "\npod "); got != b.N {
		b.Fatalf("%d pods enrolled, want %d", got, b.N)
	}
}
