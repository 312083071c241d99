package redirect

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
)

// podState is what survives the daemon for one pod (StateDir/<ID>.json).
type podState struct {
	Pod    PodNetns `json:"pod"`
	Config Config   `json:"config"`
	Cookie uint64   `json:"netnsCookie"`
	// Slot is the pod's index in the node-wide listeners sockmap.
	Slot uint32 `json:"slot"`
	// Programs identifies the pod programs' object (bpf.PodObjectHash), so
	// a daemon of another version reloads them on Recover.
	Programs string `json:"programs"`
}

func (s *podState) sameAs(o *podState) bool {
	return s.Cookie == o.Cookie && s.Slot == o.Slot && s.Programs == o.Programs && reflect.DeepEqual(s.Pod, o.Pod) && reflect.DeepEqual(s.Config, o.Config)
}

func (m *Manager) statePath(id string) string {
	return filepath.Join(m.opts.StateDir, id+".json")
}

func (m *Manager) readState(id string) (*podState, error) {
	b, err := os.ReadFile(m.statePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redirect: read state of %s: %w", id, err)
	}
	var s podState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("redirect: state of %s: %w", id, err)
	}
	return &s, nil
}

// writeState writes atomically (temp file + rename).
func (m *Manager) writeState(s *podState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(m.statePath(s.Pod.ID), b); err != nil {
		return fmt.Errorf("redirect: write state: %w", err)
	}
	return nil
}

// writeAtomic replaces path with b (temp file + rename): a reader, in this
// process or another daemon's, sees the old content or the new, never part.
func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func (m *Manager) stateIDs() ([]string, error) {
	ents, err := os.ReadDir(m.opts.StateDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && idRE.MatchString(id) {
			ids = append(ids, id)
		}
	}
	// Pins without a state file (a crash between attach and write) are
	// still ours to clean up.
	pins, _ := os.ReadDir(filepath.Join(m.opts.PinDir, "pods"))
	for _, e := range pins {
		if !slices.Contains(ids, e.Name()) && idRE.MatchString(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	slices.Sort(ids)
	return ids, nil
}
