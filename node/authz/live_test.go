package authz

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ambit-mesh/ambit/node/apis/security/v1alpha1"
)

func TestLiveRecheckClosesNewlyDenied(t *testing.T) {
	e := newEngine(t)
	live := NewLive()
	var closedProd, closedDev atomic.Int32
	var got Decision
	var mu sync.Mutex
	live.Register(request(mtlsFrom(prodWeb)), func(d Decision) {
		closedProd.Add(1)
		mu.Lock()
		got = d
		mu.Unlock()
	})
	live.Register(request(mtlsFrom(devWeb)), func(Decision) { closedDev.Add(1) })
	unreg := live.Register(request(mtlsFrom(prodBad)), func(Decision) { t.Error("unregistered connection closed") })
	unreg()
	unreg()

	if n := live.Recheck(e); n != 0 {
		t.Fatalf("no policies: closed %d", n)
	}
	e.Update([]*v1alpha1.AuthorizationPolicy{deny("foo/no-prod", src(v1alpha1.Source{Namespaces: ss("prod")}))}, nil)
	if n := live.Recheck(e); n != 1 {
		t.Fatalf("closed %d, want 1", n)
	}
	if closedProd.Load() != 1 || closedDev.Load() != 0 || live.Len() != 1 {
		t.Fatalf("prod closed %d, dev closed %d, %d left", closedProd.Load(), closedDev.Load(), live.Len())
	}
	mu.Lock()
	if got.Policy != "foo/no-prod" || got.Reason != ReasonDenyPolicy {
		t.Fatalf("close called with %v", got)
	}
	mu.Unlock()
	// Closed connections are gone: a second recheck closes nothing more.
	if n := live.Recheck(e); n != 0 || closedProd.Load() != 1 {
		t.Fatalf("second recheck closed %d", n)
	}
}

func TestLiveConcurrentRegisterAndRecheck(t *testing.T) {
	e := newEngine(t)
	e.Update([]*v1alpha1.AuthorizationPolicy{deny("foo/odd", src(v1alpha1.Source{Namespaces: ss("odd")}))}, nil)
	live := NewLive()
	var closes atomic.Int32
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ns := "even"
				if i%2 == 1 {
					ns = "odd"
				}
				unreg := live.Register(request(mtlsFrom(fmt.Sprintf("cluster.local/ns/%s/sa/w%d", ns, w))), func(Decision) { closes.Add(1) })
				if i%3 == 0 {
					unreg()
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 50 {
			live.Recheck(e)
		}
	}()
	wg.Wait()
	live.Recheck(e)
	// Per worker: 100 even connections, 34 of them unregistered (i a
	// multiple of 6), stay; 100 odd ones, 33 unregistered (odd multiples
	// of 3) and the other 67 closed by a recheck (the unregistered ones may
	// have been closed before they were unregistered).
	if left := live.Len(); left != 4*66 {
		t.Fatalf("%d connections left, want %d", left, 4*66)
	}
	if c := closes.Load(); c < 4*67 || c > 4*100 {
		t.Fatalf("%d closes, want 268..400", c)
	}
	live.mu.Lock()
	defer live.mu.Unlock()
	for _, c := range live.conns {
		if !e.Decide(c.req).Allow {
			t.Fatalf("denied connection still registered: %v", c.req.Source.Principal)
		}
	}
}
