package enrol

import (
	"sync"

	"github.com/ambit-mesh/ambit/node/tables"
)

// Queue holds the pods marked for a reconcile. The tables mark them (Add is
// their OnEnrolment handler, so the queue exists before the tables and the
// enroller); the enroller marks them too (resync, retry) and its worker
// drains them. A pod marked twice before the worker runs is reconciled once.
type Queue struct {
	mu    sync.Mutex
	dirty map[string]tables.Workload // pod UID -> the last event's view
	wake  chan struct{}
}

// NewQueue returns an empty queue.
func NewQueue() *Queue {
	return &Queue{dirty: map[string]tables.Workload{}, wake: make(chan struct{}, 1)}
}

// Add marks the pod of a tables event; it never blocks
// (tables.Options.OnEnrolment).
func (q *Queue) Add(ev tables.Event) { q.mark(ev.Workload) }

func (q *Queue) mark(w tables.Workload) {
	q.mu.Lock()
	q.dirty[w.UID] = w
	q.mu.Unlock()
	q.signal()
}

// keep marks a pod again unless it was marked meanwhile (a newer view).
func (q *Queue) keep(uid string, w tables.Workload) {
	q.mu.Lock()
	if _, ok := q.dirty[uid]; !ok {
		q.dirty[uid] = w
	}
	q.mu.Unlock()
	q.signal()
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take removes and returns every marked pod.
func (q *Queue) take() map[string]tables.Workload {
	q.mu.Lock()
	defer q.mu.Unlock()
	work := q.dirty
	q.dirty = map[string]tables.Workload{}
	return work
}

// Len is the number of marked pods.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.dirty)
}
