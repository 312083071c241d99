package enrol

import (
	"fmt"
	"sort"
	"time"
)

// Pending lists, for readiness, the pods the tables enrol here that have no
// capture and data path yet (at most 10, sorted), with the last error.
func (e *Enroller) Pending() []string {
	ws := e.cfg.Tables.LocalEnrolled()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, w := range ws {
		if _, ok := e.pods[w.UID]; ok {
			continue
		}
		s := w.Namespace + "/" + w.Name
		if f, ok := e.failing[w.UID]; ok {
			s = f
		}
		out = append(out, s)
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("and %d more", len(out)-10))
	}
	return out
}

// EnrolledCount is the number of pods with capture and a data path.
func (e *Enroller) EnrolledCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pods)
}

// PodView is one enrolled pod in the admin dump.
type PodView struct {
	Pod       string    `json:"pod"`
	UID       string    `json:"uid"`
	Capture   string    `json:"capture"`
	Identity  string    `json:"identity"`
	Addresses []string  `json:"addresses"`
	Via       string    `json:"via"`
	Since     time.Time `json:"since"`
	// Leaving: terminating or gone from the API, captured until its
	// sandbox goes.
	Leaving bool `json:"leaving,omitempty"`
	// DataPath is false for a pod recovered without an identity.
	DataPath bool `json:"dataPath"`
}

// Snapshot lists the enrolled pods for /config_dump.
func (e *Enroller) Snapshot() []PodView {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]PodView, 0, len(e.pods))
	for uid, p := range e.pods {
		v := PodView{Pod: p.Namespace + "/" + p.Name, UID: uid, Capture: p.CaptureID, Identity: p.Spec.Identity.String(), Via: p.Via, Since: p.Since,
			Leaving: p.Leaving, DataPath: !p.NoData}
		for _, a := range p.Spec.Addrs {
			v.Addresses = append(v.Addresses, a.String())
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	return out
}
