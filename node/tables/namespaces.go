package tables

import corev1 "k8s.io/api/core/v1"

// namespace is the compact record of a namespace.
type namespace struct {
	labels  Labels
	enabled bool // selected by Options.NamespaceSelector
}

func (t *Tables) upsertNamespace(n *corev1.Namespace) {
	rec := &namespace{labels: makeLabels(n.Labels)}
	rec.enabled = t.opts.NamespaceSelector.Matches(rec.labels)
	t.write(func(ev *[]Event) {
		t.namespaces[n.Name] = rec
		t.reconcileNamespace(n.Name, ev)
	})
}

func (t *Tables) deleteNamespace(n *corev1.Namespace) {
	t.write(func(ev *[]Event) {
		delete(t.namespaces, n.Name)
		t.reconcileNamespace(n.Name, ev)
	})
}

// reconcileNamespace re-evaluates this node's pods in ns: the cost is the
// number of local pods in the namespace, not the cluster's.
func (t *Tables) reconcileNamespace(ns string, ev *[]Event) {
	for name := range t.local[ns] {
		if w := t.pods[objKey{ns, name}]; w != nil {
			t.reconcile(w, ev)
		}
	}
}

// NamespaceEnrolled reports whether ns is selected for the mesh.
func (t *Tables) NamespaceEnrolled(ns string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := t.namespaces[ns]
	return n != nil && n.enabled
}
