package tables

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Scale of the benchmark cluster: 10,000 Services, each a Deployment of 10
// pods with one EndpointSlice, in 100 namespaces over 1,000 nodes.
const (
	benchServices   = 10_000
	benchPerService = 10
	benchNamespaces = 100
	benchNodes      = 1_000
)

func benchPodIP(i int) string   { return fmt.Sprintf("10.%d.%d.%d", 64+i>>16, i>>8&255, i&255) }
func benchSvcIP(s int) string   { return fmt.Sprintf("10.96.%d.%d", s>>8, s&255) }
func benchNode(i int) string    { return fmt.Sprintf("node-%d", i%benchNodes) }
func benchNS(s int) string      { return fmt.Sprintf("ns-%d", s%benchNamespaces) }
func benchSvcName(s int) string { return fmt.Sprintf("svc-%d", s) }

func benchPod(s, r int) *corev1.Pod {
	i := s*benchPerService + r
	p := pod(benchNS(s), fmt.Sprintf("%s-7d9f8b6c5-%05d", benchSvcName(s), r), benchNode(i), []string{benchPodIP(i)})
	p.Spec.ServiceAccountName = benchSvcName(s)
	p.Labels = map[string]string{
		"app": benchSvcName(s), "pod-template-hash": fmt.Sprintf("7d9f8b6c5-%d", s),
		"team": fmt.Sprintf("team-%d", s%20), "version": "v1",
	}
	return p
}

func benchSlice(s int, notReady int) any {
	var eps []ep
	for r := range benchPerService {
		i := s*benchPerService + r
		e := ep{addr: benchPodIP(i), node: benchNode(i)}
		if r == notReady {
			e.ready = bp(false)
		}
		eps = append(eps, e)
	}
	return eslice(benchNS(s), benchSvcName(s)+"-abcde", benchSvcName(s), false, map[string]int32{"http": 8080}, eps...)
}

// feed applies the whole cluster through the informer handlers, timing each
// call; objects are built one at a time so only the tables stay on the heap.
//
// With cache non-nil, pods are converted to CompactPod first (as the
// informer's transform does) and kept in *cache, as the informer cache
// keeps them, so the heap figure covers the cache and the tables.
func feed(tb *Tables, cache *[]*CompactPod) (lat []time.Duration) {
	lat = make([]time.Duration, 0, benchServices*(benchPerService+2)+benchNamespaces)
	apply := func(o any) {
		start := time.Now()
		tb.OnAdd(o, true)
		lat = append(lat, time.Since(start))
	}
	for n := range benchNamespaces {
		l := map[string]string{"kubernetes.io/metadata.name": benchNS(n)}
		if n%2 == 0 {
			l["ambit.dev/mesh"] = "enabled"
		}
		apply(ns(benchNS(n), l))
	}
	for s := range benchServices {
		for r := range benchPerService {
			if cache == nil {
				apply(benchPod(s, r))
				continue
			}
			c := CompactPodFrom(benchPod(s, r))
			*cache = append(*cache, c)
			apply(c)
		}
		apply(svc(benchNS(s), benchSvcName(s), []string{benchSvcIP(s)},
			[]corev1.ServicePort{sport("http", 80, intstr.FromString("http"))}))
		apply(benchSlice(s, -1))
	}
	return lat
}

func p99(lat []time.Duration) time.Duration {
	slices.Sort(lat)
	return lat[len(lat)*99/100]
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func benchOptions(o *Options) { o.LocalNode = benchNode(0) }

// BenchmarkTablesLoad feeds 100,000 pods, 10,000 Services and their
// EndpointSlices and reports the heap the tables hold and the p99 time of
// one handler call. Run with -benchtime=1x.
//
// "tables" counts the tables alone; "tables+podcache" also keeps the
// CompactPods the pod informer would cache (they share labels and
// addresses with the tables).
func BenchmarkTablesLoad(b *testing.B) {
	b.Run("tables", func(b *testing.B) { benchLoad(b, false) })
	b.Run("tables+podcache", func(b *testing.B) { benchLoad(b, true) })
}

func benchLoad(b *testing.B, withCache bool) {
	for b.Loop() {
		before := heapInUse()
		tb := newTables(b, benchOptions)
		var cache []*CompactPod
		cp := &cache
		if !withCache {
			cp = nil
		}
		lat := feed(tb, cp)
		after := heapInUse()
		st := tb.Stats()
		if st.Pods != benchServices*benchPerService || st.Services != benchServices || st.Endpoints != benchServices*benchPerService {
			b.Fatalf("tables incomplete: %+v", st)
		}
		b.ReportMetric(float64(after-before)/(1<<20), "heap-MB")
		b.ReportMetric(float64(p99(lat).Nanoseconds())/1e3, "p99-add-µs")
		runtime.KeepAlive(tb)
		runtime.KeepAlive(cache)
	}
}

var loaded = sync.OnceValue(func() *Tables {
	tb, err := New(Options{TrustDomain: td, LocalNode: benchNode(0)})
	if err != nil {
		panic(err)
	}
	feed(tb, nil)
	return tb
})

// BenchmarkTablesUpdate measures steady-state updates on the loaded
// tables: a pod relabel, an EndpointSlice readiness flip and, every 100th,
// a namespace relabel (which re-evaluates that namespace's local pods).
func BenchmarkTablesUpdate(b *testing.B) {
	tb := loaded()
	lat := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		s := i % benchServices
		var o any
		switch {
		case i%100 == 99:
			l := map[string]string{"kubernetes.io/metadata.name": benchNS(s)}
			if i%200 == 99 {
				l["ambit.dev/mesh"] = "enabled"
			}
			o = ns(benchNS(s), l)
		case i%2 == 0:
			p := benchPod(s, i%benchPerService)
			p.Labels["version"] = fmt.Sprintf("v%d", i)
			o = p
		default:
			o = benchSlice(s, i%benchPerService)
		}
		start := time.Now()
		tb.OnUpdate(nil, o)
		lat = append(lat, time.Since(start))
		i++
	}
	b.ReportMetric(float64(p99(lat).Nanoseconds())/1e3, "p99-update-µs")
}

// BenchmarkResolve is the per-connection routing cost on the loaded tables.
func BenchmarkResolve(b *testing.B) {
	tb := loaded()
	b.Run("service", func(b *testing.B) {
		src := netip.MustParseAddr(benchPodIP(0))
		dsts := make([]netip.AddrPort, 1024)
		for i := range dsts {
			dsts[i] = netip.AddrPortFrom(netip.MustParseAddr(benchSvcIP(i*9)), 80)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if r := tb.Resolve(dsts[i&1023], src); r.Kind == Deny {
				b.Fatalf("denied: %+v", r)
			}
			i++
		}
	})
	b.Run("pod", func(b *testing.B) {
		dst := netip.AddrPortFrom(netip.MustParseAddr(benchPodIP(12345)), 8080)
		b.ReportAllocs()
		for b.Loop() {
			if r := tb.Resolve(dst, netip.Addr{}); r.Kind == Deny {
				b.Fatalf("denied: %+v", r)
			}
		}
	})
}
