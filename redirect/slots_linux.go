package redirect

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Listener slots are shared by every daemon process on the node: during a
// surge upgrade or a deleted daemon pod's handover two processes enrol pods
// at once (the old one until the successor's CNI socket serves, the new one
// after), each with its own Manager. A slot held only in one process's
// memory would be handed out twice, and the second pod's listeners would
// overwrite the first's in the node-wide sockmap: the first pod's
// connections then find another namespace's socket and are dropped. So a
// slot is claimed on disk, under a file lock, in <StateDir>/slots/<n>
// (content: the pod ID), and released by Remove.

const slotsDir = "slots"

func (m *Manager) slotClaim(n uint32) string {
	return filepath.Join(m.opts.StateDir, slotsDir, strconv.FormatUint(uint64(n), 10))
}

// lockSlots takes the node-wide slot lock (flock on <StateDir>/slots/.lock).
func (m *Manager) lockSlots() (func(), error) { return m.flock(".lock", unix.LOCK_EX) }

// The capture lock (<StateDir>/slots/.capture) is held shared by every
// Apply of a pod without recorded state, from its first check to its state
// file, and exclusively by BeginTakeover: a successor's list of recorded
// pods therefore never misses a capture a predecessor was in the middle of.
func (m *Manager) lockCaptures(how int) (func(), error) { return m.flock(".capture", how) }

func (m *Manager) flock(name string, how int) (func(), error) {
	dir := filepath.Join(m.opts.StateDir, slotsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("redirect: lock %s: %w", name, err)
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("redirect: lock %s: %w", name, err)
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// slotsInUse is every slot some process on the node holds: the claims on
// disk whose pod still has a pin directory or a state file, the slots in
// state files (written by a daemon that predates claims), and this
// process's own.
func (m *Manager) slotsInUse() (map[uint32]string, error) {
	used := map[uint32]string{}
	for n, id := range m.slots {
		used[n] = id
	}
	ents, err := os.ReadDir(filepath.Join(m.opts.StateDir, slotsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	for _, e := range ents {
		n, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.opts.StateDir, slotsDir, e.Name()))
		if err != nil {
			continue
		}
		id := strings.TrimSpace(string(b))
		if !m.podExists(id) {
			// A claim outliving its pod (a crash inside Remove): free.
			_ = os.Remove(filepath.Join(m.opts.StateDir, slotsDir, e.Name()))
			continue
		}
		used[uint32(n)] = id
	}
	ids, err := m.stateIDs()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if st, err := m.readState(id); err == nil && st != nil {
			used[st.Slot] = id
		}
	}
	return used, nil
}

// podExists: a pod being applied has its pin directory before it claims a
// slot, and keeps it until Remove released the slot.
func (m *Manager) podExists(id string) bool {
	if !idRE.MatchString(id) || id == "." || id == ".." {
		return false
	}
	if _, err := os.Stat(m.podDir(id)); err == nil {
		return true
	}
	_, err := os.Stat(m.statePath(id))
	return err == nil
}

// allocSlot gives a new pod the lowest slot no process on the node holds,
// and claims it on disk.
func (m *Manager) allocSlot(id string) (uint32, error) {
	unlock, err := m.lockSlots()
	if err != nil {
		return 0, err
	}
	defer unlock()
	used, err := m.slotsInUse()
	if err != nil {
		return 0, err
	}
	for i := range m.opts.MaxPods {
		if owner, taken := used[i]; taken && owner != id {
			continue
		}
		if err := m.writeClaim(i, id); err != nil {
			return 0, err
		}
		m.slots[i] = id
		return i, nil
	}
	return 0, fmt.Errorf("%w: all %d pod slots in use", ErrInvalid, m.opts.MaxPods)
}

// keepSlot makes sure a pod applied again (by this process or after a
// takeover) holds its recorded slot on disk, for states written before
// claims existed.
func (m *Manager) keepSlot(n uint32, id string) error {
	if b, err := os.ReadFile(m.slotClaim(n)); err == nil && strings.TrimSpace(string(b)) == id {
		m.slots[n] = id
		return nil
	}
	unlock, err := m.lockSlots()
	if err != nil {
		return err
	}
	defer unlock()
	m.slots[n] = id
	return m.writeClaim(n, id)
}

func (m *Manager) writeClaim(n uint32, id string) error {
	if err := writeAtomic(m.slotClaim(n), []byte(id+"\n")); err != nil {
		return fmt.Errorf("redirect: claim slot %d: %w", n, err)
	}
	return nil
}

// releaseSlot drops the claim on slot n if it is id's.
func (m *Manager) releaseSlot(n uint32, id string) error {
	unlock, err := m.lockSlots()
	if err != nil {
		return err
	}
	defer unlock()
	if m.slots[n] == id {
		delete(m.slots, n)
	}
	b, err := os.ReadFile(m.slotClaim(n))
	if err != nil || strings.TrimSpace(string(b)) != id {
		return nil
	}
	if err := os.Remove(m.slotClaim(n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("redirect: release slot %d: %w", n, err)
	}
	return nil
}

// capturedAs finds the recorded capture of the namespace with this cookie
// under another ID than id (nil: none).
func (m *Manager) capturedAs(cookie uint64, id string) (*podState, error) {
	ids, err := m.stateIDs()
	if err != nil {
		return nil, err
	}
	for _, other := range ids {
		if other == id {
			continue
		}
		st, err := m.readState(other)
		if err == nil && st != nil && st.Cookie == cookie {
			return st, nil
		}
	}
	return nil, nil
}

// rekey moves the capture recorded as st.Pod.ID to id: its pin directory
// (links and stats), its slot claim and its state file. The kernel objects
// do not change.
func (m *Manager) rekey(st *podState, id string) error {
	old := st.Pod.ID
	if err := os.Remove(m.podDir(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("redirect: take over capture %s as %s: %w", old, id, err)
	}
	if err := os.Rename(m.podDir(old), m.podDir(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("redirect: take over capture %s as %s: %w", old, id, err)
	}
	moved := *st
	moved.Pod.ID = id
	if err := m.keepSlot(st.Slot, id); err != nil {
		return err
	}
	if err := m.writeState(&moved); err != nil {
		return err
	}
	if err := os.Remove(m.statePath(old)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("redirect: take over capture %s as %s: %w", old, id, err)
	}
	return nil
}

// The takeover file (<StateDir>/slots/owner) names the Manager of the
// newest daemon process, written by BeginTakeover under the slot lock.
// Without it, a pod the old process captured at its CNI ADD after the
// successor listed the recorded pods (and before the successor's CNI
// socket served) would be unknown to the successor, and its connections
// would wait in the old process's listeners after that one stopped.
const takeoverFile = "owner"

func newToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (m *Manager) takeoverOwner() string {
	b, err := os.ReadFile(filepath.Join(m.opts.StateDir, slotsDir, takeoverFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// BeginTakeover makes this Manager the node's newest: from now on any other
// Manager (a predecessor still serving CNI ADDs) refuses to capture a new
// pod with ErrHandedOver. It returns the pods recorded at that moment, as
// Recorded does; a capture another Manager began before is either among
// them or claimed under another ID and taken over when this one captures
// its namespace (Apply).
func (m *Manager) BeginTakeover() ([]PodNetns, error) {
	unlockCaptures, err := m.lockCaptures(unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlockCaptures()
	unlock, err := m.lockSlots()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := writeAtomic(filepath.Join(m.opts.StateDir, slotsDir, takeoverFile), []byte(m.token+"\n")); err != nil {
		return nil, fmt.Errorf("redirect: takeover: %w", err)
	}
	return m.Recorded()
}
