package cniplugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStopFile is where the chart's preStop hook (`ambit-cni uninstall
// --stop-file`) and the daemon's Reconciler meet: the daemon container's
// own /tmp, an emptyDir of its pod, so the old pod's hook during a rolling
// upgrade stops only the old pod's reconciler.
const DefaultStopFile = "/tmp/ambit-cni.stop"

// DefaultInterval is the Reconciler's pass interval when none is given.
const DefaultInterval = 2 * time.Second

// ReconcilerOptions configures NewReconciler.
type ReconcilerOptions struct {
	// InstallOptions: BinDir, ConfDir (required), SocketPath and
	// ExcludeNamespaces as for Install, and Binary, required here: the
	// plugin binary to copy (/ambit-cni in the daemon image).
	InstallOptions
	// Interval between passes. Optional: DefaultInterval.
	Interval time.Duration
	// StopFile: once it exists the Reconciler stops re-asserting (see
	// StopReconciler). NewReconciler removes it. Optional: no stop file,
	// which leaves nothing but ctx to stop re-asserting; then an uninstall
	// while the Reconciler runs is undone.
	StopFile string
	// Log receives one line per repair, per failure (when it differs from
	// the previous one) and per change of state. Optional: discarded.
	Log *slog.Logger
}

// Reconciler keeps ambit-cni installed: the binary in BinDir and the entry
// in the active conflist. A pass puts back whatever is missing: the entry
// after a rolling upgrade's old pod uninstalled it, or after another CNI
// plugin's installer rewrote the conflist (or put an earlier one in place),
// the binary after it was removed. A complete installation that differs
// from this one (another binary or entry) is replaced only if this
// Reconciler has not yet seen its own in place: afterwards, a different
// one was written by a newer installer (the surged pod of a rolling
// upgrade, whose init container runs after this daemon started) and is
// left alone, so two daemon pods of different versions on a node do not
// rewrite each other's files every interval. It is logged once.
//
// Every write is atomic (temporary file and rename) and a conflist is
// replaced only if it still holds what was read, so the conflist is valid
// at every moment, whoever else writes it.
type Reconciler struct {
	o       ReconcilerOptions
	log     *slog.Logger
	entry   []byte
	binPath string
	srcHash [sha256.Size]byte
	srcSize int64
	lock    *os.File // StopFile + ".lock", nil without a stop file

	// State of the goroutine running passes.
	binOK    fileID // the installed binary last found to be ours
	asserted bool   // ours was in place at least once
	note     string // the last state or failure logged, to log changes only
	stopped  bool

	repairs, failures atomic.Uint64
}

type fileID struct {
	ino, size uint64
	mtime     int64
	mode      os.FileMode
}

// NewReconciler checks the options and reads the source binary once.
// Create it early in the daemon's start-up: it removes the stop file, so a
// restarted container (whose previous run's preStop wrote it) re-asserts.
func NewReconciler(o ReconcilerOptions) (*Reconciler, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	if o.Binary == "" {
		return nil, errors.New("cniplugin: Reconciler needs Binary, the plugin to copy")
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	r := &Reconciler{o: o, log: o.Log, entry: o.entry(), binPath: filepath.Join(o.BinDir, PluginType)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	src, err := os.Open(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("cniplugin: plugin binary: %w", err)
	}
	defer src.Close()
	h := sha256.New()
	n, err := io.Copy(h, src)
	if err != nil {
		return nil, fmt.Errorf("cniplugin: plugin binary: %w", err)
	}
	r.srcSize = n
	h.Sum(r.srcHash[:0])
	if o.StopFile != "" {
		if err := os.Remove(o.StopFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cniplugin: stop file: %w", err)
		}
		if r.lock, err = os.OpenFile(o.StopFile+".lock", os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return nil, fmt.Errorf("cniplugin: stop file: %w", err)
		}
	}
	return r, nil
}

// KeepInstalled runs a Reconciler with DefaultStopFile until ctx ends
// (then it returns nil); an error means the options or the binary are
// unusable.
func KeepInstalled(ctx context.Context, opts InstallOptions, interval time.Duration, log *slog.Logger) error {
	r, err := NewReconciler(ReconcilerOptions{InstallOptions: opts, Interval: interval, StopFile: DefaultStopFile, Log: log})
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Run(ctx)
}

// Repairs counts passes that wrote the binary or the entry.
func (r *Reconciler) Repairs() uint64 { return r.repairs.Load() }

// Failures counts passes that failed (unreadable directory, conflist that
// is not JSON, failed write, no conflist to chain into).
func (r *Reconciler) Failures() uint64 { return r.failures.Load() }

// Close releases the stop file's lock. The installation stays.
func (r *Reconciler) Close() error {
	if r.lock == nil {
		return nil
	}
	return r.lock.Close()
}

// Run makes a pass at once and then every Interval until ctx ends, and
// returns nil. One Run (or Reconcile) at a time.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.o.Interval)
	defer t.Stop()
	return r.run(ctx, t.C)
}

func (r *Reconciler) run(ctx context.Context, tick <-chan time.Time) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		r.Reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

// Reconcile makes one pass; the error (also logged and counted) is for
// callers that want it.
func (r *Reconciler) Reconcile(ctx context.Context) error {
	if r.lock != nil {
		if err := flock(ctx, r.lock); err != nil {
			return r.fail(err)
		}
		defer unix.Flock(int(r.lock.Fd()), unix.LOCK_UN)
		if _, err := os.Stat(r.o.StopFile); err == nil {
			if !r.stopped {
				r.log.Info("ambit-cni: uninstall requested by this pod's preStop hook; no longer re-installing", "stop_file", r.o.StopFile)
				r.stopped = true
			}
			return nil
		}
		r.stopped = false
	}
	return r.pass()
}

type state int

const (
	ours state = iota
	missing
	differs
)

func (s state) String() string { return [...]string{"in place", "missing", "different"}[s] }

func (r *Reconciler) pass() error {
	bin, err := r.binaryState()
	if err != nil {
		return r.fail(err)
	}
	conf, ent, err := r.entryState()
	if err != nil {
		return r.fail(err)
	}
	switch {
	case bin == ours && ent == ours:
		r.asserted = true
		r.noteState("", nil)
		return nil
	case bin != missing && ent != missing && r.asserted:
		r.noteState(fmt.Sprintf("binary %s, entry %s", bin, ent), func() {
			r.log.Warn("ambit-cni: installed by another installer (a newer daemon pod?); left as it is until it goes missing",
				"binary", bin.String(), "entry", ent.String(), "conflist", conf)
		})
		return nil
	}
	if bin != ours {
		if err := copyAtomic(r.o.Binary, r.binPath, 0o755); err != nil {
			return r.fail(err)
		}
		id, err := statID(r.binPath)
		if err != nil {
			return r.fail(err)
		}
		r.binOK = id
	}
	path, wrote, err := chainEntry(r.o.ConfDir, r.entry)
	if err != nil {
		return r.fail(err)
	}
	r.repairs.Add(1)
	r.asserted = true
	r.note = ""
	r.log.Info("ambit-cni: re-installed", "binary", bin.String(), "entry", ent.String(), "conflist", path, "conflist_written", wrote)
	return nil
}

// binaryState compares the installed binary with the source; it hashes the
// file only when its identity changed since it was last found to be ours.
func (r *Reconciler) binaryState() (state, error) {
	id, err := statID(r.binPath)
	if errors.Is(err, os.ErrNotExist) {
		return missing, nil
	} else if err != nil {
		return 0, fmt.Errorf("cniplugin: %w", err)
	}
	if id == r.binOK {
		return ours, nil
	}
	if id.size != uint64(r.srcSize) || id.mode.Perm() != 0o755 {
		return differs, nil
	}
	f, err := os.Open(r.binPath)
	if errors.Is(err, os.ErrNotExist) {
		return missing, nil
	} else if err != nil {
		return 0, fmt.Errorf("cniplugin: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return 0, fmt.Errorf("cniplugin: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), r.srcHash[:]) {
		return differs, nil
	}
	r.binOK = id
	return ours, nil
}

// entryState finds ambit's entry in the active conflist.
func (r *Reconciler) entryState() (string, state, error) {
	path, err := ActiveConflist(r.o.ConfDir)
	if err != nil {
		return "", 0, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return path, 0, fmt.Errorf("cniplugin: %w", err)
	}
	_, _, els, err := pluginsArray(b)
	if err != nil {
		return path, 0, fmt.Errorf("cniplugin: %s: %w", path, err)
	}
	for _, e := range els {
		if e.typ == PluginType {
			if bytes.Equal(compactJSON(b[e.start:e.end]), r.entry) {
				return path, ours, nil
			}
			return path, differs, nil
		}
	}
	return path, missing, nil
}

func statID(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: uint64(st.Size()), mtime: st.ModTime().UnixNano(), mode: st.Mode()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.ino = sys.Ino
	}
	return id, nil
}

// fail counts and logs a failed pass; the same failure again is counted,
// not logged.
func (r *Reconciler) fail(err error) error {
	r.failures.Add(1)
	r.noteState("failure: "+err.Error(), func() {
		r.log.Error("ambit-cni: cannot keep the plugin installed; retrying every interval", "err", err, "interval", r.o.Interval)
	})
	return err
}

// noteState runs logf when the state changed since the last one noted.
func (r *Reconciler) noteState(s string, logf func()) {
	if s == r.note {
		return
	}
	r.note = s
	if logf != nil {
		logf()
	}
}

// StopReconciler makes the Reconciler whose stop file is stopFile stop
// re-asserting, before the caller uninstalls: it takes the lock the
// Reconciler holds during each pass (waiting for a pass in progress to
// end) and creates the stop file; every later pass sees it. It waits for
// the lock until ctx ends.
func StopReconciler(ctx context.Context, stopFile string) error {
	lock, err := os.OpenFile(stopFile+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("cniplugin: stop file: %w", err)
	}
	defer lock.Close() // releases the lock
	if err := flock(ctx, lock); err != nil {
		return err
	}
	f, err := os.OpenFile(stopFile, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("cniplugin: stop file: %w", err)
	}
	return f.Close()
}

// flock takes an exclusive lock on f, polling so that ctx can end the wait.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("cniplugin: lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cniplugin: lock %s: %w", f.Name(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
