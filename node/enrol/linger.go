package enrol

import (
	"context"
	"errors"
	"io/fs"
	"os"

	"github.com/ambit-mesh/ambit/redirect"
)

// netnsRef names a pod's network namespace: its path and the identity
// (device, inode) of the namespace it named at enrolment. The namespace is
// gone when the path no longer exists or names another namespace.
type netnsRef struct {
	Path     string
	dev, ino uint64
}

// netnsOf records the namespace of pod: the open handle when there is one
// (the CNI ADD's descriptor), else its path.
func netnsOf(pod redirect.PodNetns) netnsRef {
	ref := netnsRef{Path: pod.NetnsPath}
	var st os.FileInfo
	var err error
	if pod.Netns != nil {
		st, err = pod.Netns.Stat()
	} else if pod.NetnsPath != "" {
		st, err = os.Stat(pod.NetnsPath)
	}
	if err == nil && st != nil {
		ref.dev, ref.ino, _ = fileID(st)
	}
	return ref
}

// known: the namespace's identity was recorded, so its going can be told.
func (r netnsRef) known() bool { return r.Path != "" && r.ino != 0 }

// gone reports whether the namespace r named no longer exists. A namespace
// whose identity was never recorded is never reported gone (its CNI DEL
// ends it). An error other than "does not exist" is not "gone": fail
// closed, keep the capture.
func (r netnsRef) gone() bool {
	if !r.known() {
		return false
	}
	st, err := os.Stat(r.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	dev, ino, ok := fileID(st)
	return ok && (dev != r.dev || ino != r.ino)
}

// netnsMissing: path names no namespace any more (an empty path is not
// known to be missing).
func netnsMissing(path string) bool {
	if path == "" {
		return false
	}
	_, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist)
}

// lingerOrRelease handles an enrolled pod the API no longer runs
// (terminating, finished, deleted, or replaced under its name): released
// when its namespace is gone, otherwise kept captured with its data path
// and certificate, marked Leaving. Called with the pod's lock held.
func (e *Enroller) lingerOrRelease(ctx context.Context, uid string, cur *enrolledPod) error {
	if cur.Netns.gone() {
		return e.release(ctx, uid, cur)
	}
	e.mu.Lock()
	first := !cur.Leaving
	cur.Leaving = true
	e.mu.Unlock()
	if first {
		e.log.Info("pod leaving the cluster; capture kept until its sandbox goes",
			"pod", cur.Namespace+"/"+cur.Name, "capture", cur.CaptureID, "netns", cur.Netns.Path)
	}
	return nil
}

// releaseGone releases every enrolled pod whose network namespace is gone
// (its CNI DEL was missed: daemon down, or DEL never sent).
func (e *Enroller) releaseGone(ctx context.Context) {
	e.mu.Lock()
	var check []string
	for uid, p := range e.pods {
		if p.Netns.known() {
			check = append(check, uid)
		}
	}
	e.mu.Unlock()
	for _, uid := range check {
		if ctx.Err() != nil {
			return
		}
		unlock := e.lock(uid)
		if cur := e.current(uid); cur != nil && cur.Netns.gone() {
			if err := e.release(ctx, uid, cur); err != nil {
				e.log.Warn("enrolment: release of a pod whose sandbox is gone", "pod", cur.Namespace+"/"+cur.Name, "err", err)
			}
		}
		unlock()
	}
}
