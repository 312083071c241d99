package identity

import (
	"sort"
	"time"
)

// CertInfo describes one tracked identity for the admin config_dump. It
// never holds key material.
type CertInfo struct {
	ID          string    `json:"id"`
	State       State     `json:"state"`
	Usable      bool      `json:"usable"`
	Serial      string    `json:"serial,omitempty"` // hex
	NotBefore   time.Time `json:"not_before,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	RenewAt     time.Time `json:"renew_at,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Failures    int       `json:"failures,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Refs        int       `json:"refs"`
	// Released: no pod holds the identity any more; it lingers (without
	// renewals) for ManagerConfig.ReleaseGrace in case a pod takes it again.
	Released    bool `json:"released,omitempty"`
	ChainLength int  `json:"chain_length,omitempty"`
}

// Snapshot lists every tracked identity, sorted by ID.
func (m *Manager) Snapshot() []CertInfo {
	now := m.cfg.Clock.Now()
	m.mu.RLock()
	out := make([]CertInfo, 0, len(m.entries))
	entries := make([]*entry, 0, len(m.entries))
	refs := make([]int, 0, len(m.entries))
	released := make([]bool, 0, len(m.entries))
	for _, e := range m.entries {
		entries = append(entries, e)
		refs = append(refs, e.refs)
		released = append(released, e.refs == 0 && e.lingerGen > 0)
	}
	m.mu.RUnlock()
	for i, e := range entries {
		e.mu.Lock()
		ci := CertInfo{ID: e.id.String(), State: e.state, Refs: refs[i], Released: released[i], Failures: e.failures,
			RenewAt: e.renewAt, NextAttempt: e.nextAttempt}
		if e.lastErr != nil {
			ci.LastError = e.lastErr.Error()
		}
		if s := e.svid.Load(); s != nil {
			leaf := s.Certificates[0]
			ci.Usable = usable(s, now)
			ci.Serial = leaf.SerialNumber.Text(16)
			ci.NotBefore, ci.NotAfter = leaf.NotBefore, leaf.NotAfter
			ci.ChainLength = len(s.Certificates)
		}
		e.mu.Unlock()
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
