package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// PluginType is the "type" of ambit's entry in a conflist and the name of
// its binary in the CNI bin directory.
const PluginType = "ambit-cni"

// InstallOptions configures Install and Uninstall.
type InstallOptions struct {
	// BinDir is the host's CNI bin directory. Required.
	BinDir string
	// ConfDir is the host's CNI config directory. Required.
	ConfDir string
	// Binary is the plugin binary to copy. Optional: default this executable.
	Binary string
	// SocketPath is written into the plugin entry. Optional: DefaultSocket.
	SocketPath string
	// ExcludeNamespaces are written into the plugin entry (sorted, without
	// duplicates): pods there start without the daemon. Each must be a
	// namespace name (DNS label). Optional.
	ExcludeNamespaces []string
}

// ErrBadNamespace: an ExcludeNamespaces element is not a namespace name.
var ErrBadNamespace = errors.New("cniplugin: not a namespace name")

// ParseNamespaceList splits a comma-separated list of namespace names (the
// --exclude-namespaces flag), ignoring blanks around names and empty
// elements, and checks each name.
func ParseNamespaceList(s string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if err := checkNamespace(n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// checkNamespace: a DNS label (RFC 1123), as Kubernetes requires of
// namespace names.
func checkNamespace(n string) error {
	ok := len(n) >= 1 && len(n) <= 63 && n[0] != '-' && n[len(n)-1] != '-'
	for i := 0; ok && i < len(n); i++ {
		c := n[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: %q (lower-case letters, digits and '-', at most 63)", ErrBadNamespace, n)
	}
	return nil
}

// normalize fills defaults and checks o; the binary is left to the caller.
func (o *InstallOptions) normalize() error {
	if o.BinDir == "" || o.ConfDir == "" {
		return errors.New("cniplugin: BinDir and ConfDir are required")
	}
	if o.SocketPath == "" {
		o.SocketPath = DefaultSocket
	}
	for _, n := range o.ExcludeNamespaces {
		if err := checkNamespace(n); err != nil {
			return err
		}
	}
	o.ExcludeNamespaces = slices.Compact(slices.Sorted(slices.Values(o.ExcludeNamespaces)))
	return nil
}

// entry is ambit's element of the plugins array, compact, keys sorted.
func (o *InstallOptions) entry() []byte {
	m := map[string]any{"type": PluginType, "socketPath": o.SocketPath}
	if len(o.ExcludeNamespaces) > 0 {
		m["excludeNamespaces"] = o.ExcludeNamespaces
	}
	b, _ := json.Marshal(m)
	return b
}

// ErrNoConflist: no active network configuration list to chain into.
var ErrNoConflist = errors.New("cniplugin: no active .conflist in the CNI config directory")

// Install copies the plugin binary into BinDir and appends ambit's entry
// to the plugins of the active conflist (the first by name, as runtimes
// pick it). Both writes are atomic (temporary file + rename); the rest of
// the conflist is kept byte for byte. Running it again changes nothing.
func Install(o InstallOptions) error {
	if err := o.normalize(); err != nil {
		return err
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Binary = exe
	}
	if err := copyAtomic(o.Binary, filepath.Join(o.BinDir, PluginType), 0o755); err != nil {
		return err
	}
	_, _, err := chainEntry(o.ConfDir, o.entry())
	return err
}

// chainEntry puts entry into the active conflist unless it is there
// already, and says which file and whether it wrote. A conflist rewritten
// by someone else while this ran is read again (a few times) rather than
// overwritten.
func chainEntry(confDir string, entry []byte) (path string, wrote bool, err error) {
	for range 3 {
		path, err = ActiveConflist(confDir)
		if err != nil {
			return "", false, err
		}
		orig, err := os.ReadFile(path)
		if err != nil {
			return path, false, fmt.Errorf("cniplugin: %w", err)
		}
		out, err := insertPlugin(orig, entry)
		if err != nil {
			return path, false, fmt.Errorf("cniplugin: %s: %w", path, err)
		}
		if bytes.Equal(out, orig) {
			return path, false, nil
		}
		err = replaceIfUnchanged(path, orig, out)
		if !errors.Is(err, errChanged) {
			return path, err == nil, err
		}
	}
	return path, false, fmt.Errorf("cniplugin: %s: %w", path, errChanged)
}

// Uninstall removes ambit's entry from every conflist of ConfDir (the
// active one and any that was active when an earlier install ran, so none
// is left to fail ADDs should it become active again), leaving the rest as
// it was, and the binary.
func Uninstall(o InstallOptions) error {
	if o.BinDir == "" || o.ConfDir == "" {
		return errors.New("cniplugin: BinDir and ConfDir are required")
	}
	var errs []error
	names, err := configFiles(o.ConfDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".conflist") {
			errs = append(errs, unchain(filepath.Join(o.ConfDir, n)))
		}
	}
	if err := os.Remove(filepath.Join(o.BinDir, PluginType)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unchain removes ambit's entry from one conflist. A file that is not a
// conflist ambit understands is left alone.
func unchain(path string) error {
	for range 3 {
		orig, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		} else if err != nil {
			return fmt.Errorf("cniplugin: %w", err)
		}
		out, err := removePlugin(orig)
		if err != nil || bytes.Equal(out, orig) {
			return nil
		}
		if err := replaceIfUnchanged(path, orig, out); !errors.Is(err, errChanged) {
			return err
		}
	}
	return fmt.Errorf("cniplugin: %s: %w", path, errChanged)
}

// ActiveConflist returns the conflist a runtime would use: the first
// .conflist, .conf or .json by name. A single-plugin .conf cannot be chained.
func ActiveConflist(dir string) (string, error) {
	names, err := configFiles(dir)
	if err != nil {
		return "", err
	}
	if len(names) == 0 {
		return "", fmt.Errorf("%w: %s", ErrNoConflist, dir)
	}
	if !strings.HasSuffix(names[0], ".conflist") {
		return "", fmt.Errorf("%w: the active file %s is a single-plugin config", ErrNoConflist, names[0])
	}
	return filepath.Join(dir, names[0]), nil
}

// configFiles lists the CNI configuration files of dir, sorted by name.
func configFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cniplugin: %w", err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if e.Type().IsRegular() && !strings.HasPrefix(n, ".") &&
			(strings.HasSuffix(n, ".conflist") || strings.HasSuffix(n, ".conf") || strings.HasSuffix(n, ".json")) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// element is one entry of the plugins array, as byte offsets.
type element struct {
	start, end int
	typ        string
}

// pluginsArray finds the plugins array of a conflist: the offset just after
// '[' , the offset of ']', and its elements.
func pluginsArray(b []byte) (open, closing int, els []element, err error) {
	d := json.NewDecoder(bytes.NewReader(b))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return 0, 0, nil, errors.New("not a JSON object")
	}
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return 0, 0, nil, err
		}
		if k != "plugins" {
			var skip json.RawMessage
			if err := d.Decode(&skip); err != nil {
				return 0, 0, nil, err
			}
			continue
		}
		if t, err := d.Token(); err != nil || t != json.Delim('[') {
			return 0, 0, nil, errors.New(`"plugins" is not an array`)
		}
		open = int(d.InputOffset())
		for d.More() {
			before := int(d.InputOffset())
			var raw json.RawMessage
			if err := d.Decode(&raw); err != nil {
				return 0, 0, nil, err
			}
			end := int(d.InputOffset())
			start := before + bytes.IndexAny(b[before:end], "{[\"tfn0123456789-")
			var p struct {
				Type string `json:"type"`
			}
			json.Unmarshal(raw, &p)
			els = append(els, element{start: start, end: end, typ: p.Type})
		}
		if _, err := d.Token(); err != nil {
			return 0, 0, nil, err
		}
		closing = int(d.InputOffset()) - 1
		return open, closing, els, nil
	}
	return 0, 0, nil, errors.New(`no "plugins" array`)
}

func insertPlugin(b, entry []byte) ([]byte, error) {
	open, closing, els, err := pluginsArray(b)
	if err != nil {
		return nil, err
	}
	for _, e := range els {
		if e.typ == PluginType {
			if bytes.Equal(compactJSON(b[e.start:e.end]), entry) {
				return b, nil
			}
			// Replace an outdated entry in place.
			return slices.Concat(b[:e.start], entry, b[e.end:]), nil
		}
	}
	if len(els) == 0 {
		return slices.Concat(b[:open], entry, b[closing:]), nil
	}
	last := els[len(els)-1]
	// Same separator and indentation as between the previous elements (or
	// before the first one).
	sep := []byte(",")
	if len(els) >= 2 {
		sep = b[els[len(els)-2].end:last.start]
	} else if ws := b[open:last.start]; len(bytes.TrimSpace(ws)) == 0 {
		sep = append([]byte(","), ws...)
	}
	return slices.Concat(b[:last.end], sep, entry, b[last.end:]), nil
}

func removePlugin(b []byte) ([]byte, error) {
	open, _, els, err := pluginsArray(b)
	if err != nil {
		return nil, err
	}
	for i, e := range els {
		if e.typ != PluginType {
			continue
		}
		switch {
		case i > 0:
			return slices.Concat(b[:els[i-1].end], b[e.end:]), nil
		case len(els) > 1:
			return slices.Concat(b[:open], b[open:e.start], b[els[1].start:]), nil
		default:
			return slices.Concat(b[:e.start], b[e.end:]), nil
		}
	}
	return b, nil
}

func compactJSON(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}

// errChanged: the file changed between reading and replacing it.
var errChanged = errors.New("changed by another writer while being edited")

// replaceIfUnchanged replaces path (holding orig when read) with data,
// unless path no longer holds orig just before the rename: another
// installer's rewrite is then not lost. The window left (between the check
// and the rename) is a few system calls.
func replaceIfUnchanged(path string, orig, data []byte) error {
	return writeAtomicIf(path, data, 0, func() error {
		now, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("cniplugin: %w", err)
		}
		if !bytes.Equal(now, orig) {
			return errChanged
		}
		return nil
	})
}

// writeAtomic replaces path with data; mode 0 keeps the file's mode
// (0644 for a new file).
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	return writeAtomicIf(path, data, mode, nil)
}

// writeAtomicIf is writeAtomic with a last check (when not nil) run just
// before the rename; its error cancels the write.
func writeAtomicIf(path string, data []byte, mode os.FileMode, check func() error) error {
	if mode == 0 {
		mode = 0o644
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ambit-cni-*.tmp")
	if err != nil {
		return fmt.Errorf("cniplugin: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("cniplugin: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cniplugin: %w", err)
	}
	return nil
}

func copyAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("cniplugin: %w", err)
	}
	defer in.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, in); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return writeAtomic(dst, buf.Bytes(), mode)
}
