package tables

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

// TestConcurrentUpdatesAndResolve runs informer-style writers, routing
// readers and an event callback that reads the tables, under -race; it
// checks the callback sees a consistent per-pod Enrol/Release alternation.
func TestConcurrentUpdatesAndResolve(t *testing.T) {
	var mu sync.Mutex
	state := map[string]EventType{}
	var tb *Tables
	tb = newTables(t, func(o *Options) {
		o.OnEnrolment = func(e Event) {
			// Reading from the callback must not deadlock.
			if _, ok := tb.Pod(e.Workload.Namespace, e.Workload.Name); !ok && e.Type == Enrol {
				t.Errorf("enrolled pod %s not found", e.Workload.Name)
			}
			mu.Lock()
			defer mu.Unlock()
			if state[e.Workload.Name] == e.Type {
				t.Errorf("%s: two %v events in a row", e.Workload.Name, e.Type)
			}
			state[e.Workload.Name] = e.Type
		}
	})
	for i := range 50 {
		tb.OnAdd(pod("a", fmt.Sprintf("p%d", i), localNode, []string{fmt.Sprintf("10.1.0.%d", i)}), true)
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // namespace flapping
		defer wg.Done()
		for i := range 200 {
			if i%2 == 0 {
				tb.OnUpdate(nil, ns("a", meshOn))
			} else {
				tb.OnUpdate(nil, ns("a", nil))
			}
		}
	}()
	go func() { // pods opting out and back in
		defer wg.Done()
		for i := range 400 {
			p := pod("a", fmt.Sprintf("p%d", i%50), localNode, []string{fmt.Sprintf("10.1.0.%d", i%50)})
			if i%3 == 0 {
				p.Labels["ambit.dev/mesh"] = "disabled"
			}
			tb.OnUpdate(nil, p)
		}
	}()
	go func() { // routing
		defer wg.Done()
		for i := range 2000 {
			r := tb.Resolve(netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("10.1.0.%d", i%50)), 80), netip.Addr{})
			if r.Kind == Deny {
				t.Errorf("pod route denied: %+v", r)
				return
			}
		}
	}()
	wg.Wait()
	// Final state agrees with the last event of every pod.
	tb.OnUpdate(nil, ns("a", meshOn))
	for i := range 50 {
		name := fmt.Sprintf("p%d", i)
		w, _ := tb.Pod("a", name)
		mu.Lock()
		last := state[name]
		mu.Unlock()
		if w.Enrolled != (last == Enrol) {
			t.Errorf("%s: enrolled %v but last event %v", name, w.Enrolled, last)
		}
	}
}
