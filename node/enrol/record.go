package enrol

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
)

// podRecord is what the enroller keeps on disk for each enrolled pod: enough
// to rebuild its data path after a restart when the API server no longer
// lists the pod (deleted while its sandbox still runs).
type podRecord struct {
	CaptureID      string            `json:"captureID"`
	UID            string            `json:"uid"`
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	ServiceAccount string            `json:"serviceAccount"`
	Labels         map[string]string `json:"labels,omitempty"`
	Addresses      []netip.Addr      `json:"addresses"`
}

var recordIDRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

func (e *Enroller) recordPath(captureID string) (string, bool) {
	if e.cfg.StateDir == "" || !recordIDRE.MatchString(captureID) || captureID == "." || captureID == ".." {
		return "", false
	}
	return filepath.Join(e.cfg.StateDir, captureID+".json"), true
}

// writeRecord stores r atomically; a failure is logged (the pod is served
// anyway; only a later restart without the API's view would miss it).
func (e *Enroller) writeRecord(r podRecord) {
	path, ok := e.recordPath(r.CaptureID)
	if !ok {
		return
	}
	b, err := json.Marshal(r)
	if err == nil {
		err = os.MkdirAll(e.cfg.StateDir, 0o700)
	}
	if err == nil {
		tmp := path + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		e.log.Warn("enrolment: cannot record the pod for a restart", "pod", r.Namespace+"/"+r.Name, "err", err)
	}
}

// readRecord returns the record of a capture, if one was kept.
func (e *Enroller) readRecord(captureID string) (podRecord, bool) {
	path, ok := e.recordPath(captureID)
	if !ok {
		return podRecord{}, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			e.log.Warn("enrolment: pod record unreadable", "capture", captureID, "err", err)
		}
		return podRecord{}, false
	}
	var r podRecord
	if err := json.Unmarshal(b, &r); err != nil || r.CaptureID != captureID {
		e.log.Warn("enrolment: pod record invalid", "capture", captureID, "err", err)
		return podRecord{}, false
	}
	return r, true
}

func (e *Enroller) removeRecord(captureID string) {
	path, ok := e.recordPath(captureID)
	if !ok {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.log.Warn("enrolment: remove pod record", "capture", captureID, "err", err)
	}
}
