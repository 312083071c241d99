package tables

import (
	"sort"
	"unique"
)

// Labels is a compact, immutable label set: sorted key/value pairs of
// interned strings (8 bytes each). A pod's labels repeat across its
// replicas, so interning keeps one copy of every distinct key and value;
// a map[string]string costs several hundred bytes per pod instead.
// Labels implements k8s.io/apimachinery/pkg/labels.Labels, so label
// selectors match it without building a map.
type Labels []label

type label struct{ k, v unique.Handle[string] }

func makeLabels(m map[string]string) Labels {
	if len(m) == 0 {
		return nil
	}
	l := make(Labels, 0, len(m))
	for k, v := range m {
		l = append(l, label{unique.Make(k), unique.Make(v)})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].k.Value() < l[j].k.Value() })
	return l
}

// Lookup returns the value of key and whether it is set.
func (l Labels) Lookup(key string) (string, bool) {
	i := sort.Search(len(l), func(i int) bool { return l[i].k.Value() >= key })
	if i < len(l) && l[i].k.Value() == key {
		return l[i].v.Value(), true
	}
	return "", false
}

// Has reports whether key is set.
func (l Labels) Has(key string) bool { _, ok := l.Lookup(key); return ok }

// Get returns the value of key, "" when unset.
func (l Labels) Get(key string) string { v, _ := l.Lookup(key); return v }

// Map returns the labels as a new map (nil when empty).
func (l Labels) Map() map[string]string {
	if len(l) == 0 {
		return nil
	}
	m := make(map[string]string, len(l))
	for _, p := range l {
		m[p.k.Value()] = p.v.Value()
	}
	return m
}

// intern returns a handle for s; the zero handle is never used so that an
// unset field is distinguishable only by its value "".
func intern(s string) unique.Handle[string] { return unique.Make(s) }
