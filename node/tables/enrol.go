package tables

// EventType says whether a pod joins or leaves the mesh.
type EventType uint8

const (
	// Enrol: the pod is now in the mesh; capture its traffic.
	Enrol EventType = iota + 1
	// Release: the pod left the mesh (relabelled, opted out, finished or
	// deleted from the API). Workload.Terminating (or the pod missing from
	// the tables) tells the capture layer it was not taken out on purpose:
	// keep capturing until its network namespace goes.
	Release
)

func (e EventType) String() string {
	switch e {
	case Enrol:
		return "Enrol"
	case Release:
		return "Release"
	}
	return "unknown"
}

// Event announces a change of enrolment of a pod on the local node.
type Event struct {
	Type     EventType
	Workload Workload
}

// reconcile compares a local pod's announced enrolment with what it should
// be and appends the event that brings them together; called with t.mu
// held for writing.
func (t *Tables) reconcile(w *workload, ev *[]Event) {
	if !w.local {
		return
	}
	want := t.isEnrolled(w)
	if want == w.enrolled {
		return
	}
	w.enrolled = want
	typ := Release
	if want {
		typ = Enrol
	}
	*ev = append(*ev, Event{Type: typ, Workload: t.snapshot(w)})
}
