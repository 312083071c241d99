package watch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/node/tables"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

// While the API server does not answer, every informer is stale (the
// metric and readiness say so) and the tables keep their state; when it
// answers again, staleness clears.
func TestProbeFailureMarksStale(t *testing.T) {
	tb, err := tables.New(tables.Options{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), LocalNode: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	w, err := New(Config{Client: fake.NewClientset(objects()...), Handler: tb, ProbeInterval: 10 * time.Millisecond,
		Probe: func(ctx context.Context) error {
			if down.Load() {
				return errors.New("connection refused")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if err := w.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	wait := func(stale bool) Status {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			st := w.Status()
			if st.Stale == stale {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("stale never became %v: %+v", stale, st)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	st := wait(false)
	if st.APIServerError != nil {
		t.Fatalf("API server error while it answers: %v", st.APIServerError)
	}
	down.Store(true)
	st = wait(true)
	if st.APIServerError == nil || st.APIServerDownSince.IsZero() {
		t.Fatalf("status while down: %+v", st)
	}
	for _, i := range st.Informers {
		if !i.Stale {
			t.Errorf("informer %s not stale while the API server is down", i.Name)
		}
	}
	if _, ok := tb.Pod("shop", "web-1"); !ok {
		t.Error("tables lost their state")
	}
	down.Store(false)
	if st := wait(false); st.APIServerError != nil || !st.APIServerDownSince.IsZero() {
		t.Fatalf("status after recovery: %+v", st)
	}
}

// The default probe reads /readyz with the real client: a 500 or a closed
// server is an error, a 200 is not. A fake client gets no probe.
func TestReadyzProbe(t *testing.T) {
	var code atomic.Int32
	code.Store(http.StatusInternalServerError)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	probe := ReadyzProbe(client)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := probe(ctx); err == nil {
		t.Error("probe passed on a 500")
	}
	code.Store(http.StatusOK)
	if err := probe(ctx); err != nil {
		t.Errorf("probe on a 200: %v", err)
	}
	srv.Close()
	if err := probe(ctx); err == nil {
		t.Error("probe passed with the API server gone")
	}
	if ReadyzProbe(fake.NewClientset()) != nil {
		t.Error("a probe for a fake client")
	}
}
