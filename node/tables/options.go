package tables

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/labels"
)

// Default label selectors for enrolment.
const (
	// DefaultNamespaceSelector selects the namespaces whose pods are enrolled.
	DefaultNamespaceSelector = "ambit.dev/mesh=enabled"
	// DefaultPodOptOutSelector selects pods that stay out of the mesh even
	// in an enrolled namespace.
	DefaultPodOptOutSelector = "ambit.dev/mesh=disabled"
	// HBONEPort is the port every enrolled pod accepts HBONE tunnels on.
	HBONEPort = 15008
)

// ErrBadOptions is wrapped by New for invalid options.
var ErrBadOptions = errors.New("tables: invalid options")

// Options configures New.
type Options struct {
	// TrustDomain of the mesh, used to build endpoint identities (required).
	TrustDomain spiffeid.TrustDomain
	// LocalNode is the name of the node this agent runs on (required).
	// Enrolment events are only emitted for pods on this node.
	LocalNode string
	// NamespaceSelector selects enrolled namespaces (optional, default
	// DefaultNamespaceSelector).
	NamespaceSelector labels.Selector
	// PodOptOutSelector selects pods kept out of the mesh (optional,
	// default DefaultPodOptOutSelector).
	PodOptOutSelector labels.Selector
	// SelfNamespace and SelfSelector identify ambit's own pods, which are
	// never enrolled (optional; when SelfSelector is nil no pod counts as
	// ambit itself). An empty SelfNamespace matches every namespace.
	SelfNamespace string
	SelfSelector  labels.Selector
	// ClusterCIDRs are the pod and service ranges (optional). An unknown
	// destination inside them is passed through even when DenyUnknown is
	// set: it is most likely a pod the watch has not delivered yet.
	ClusterCIDRs []netip.Prefix
	// DenyUnknown refuses destinations that are neither a Service, a known
	// pod nor inside ClusterCIDRs (optional, default passthrough).
	DenyUnknown bool
	// OnEnrolment receives Enrol/Release events for pods on LocalNode
	// (optional). It is called in the order of the changes, one event at
	// a time, after the tables are updated and without the tables' lock
	// held, so it may call the read methods (Resolve, Lookup, ...), but not
	// the handlers, and must not block for long: the handler call that
	// caused the event returns only after it is delivered.
	OnEnrolment func(Event)
	// Logger (optional, default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (optional, default time.Now).
	Now func() time.Time
}

func (o *Options) setDefaults() error {
	if o.TrustDomain.IsZero() {
		return fmt.Errorf("%w: TrustDomain is required", ErrBadOptions)
	}
	if o.LocalNode == "" {
		return fmt.Errorf("%w: LocalNode is required", ErrBadOptions)
	}
	var err error
	if o.NamespaceSelector == nil {
		if o.NamespaceSelector, err = labels.Parse(DefaultNamespaceSelector); err != nil {
			return fmt.Errorf("%w: %w", ErrBadOptions, err)
		}
	}
	if o.PodOptOutSelector == nil {
		if o.PodOptOutSelector, err = labels.Parse(DefaultPodOptOutSelector); err != nil {
			return fmt.Errorf("%w: %w", ErrBadOptions, err)
		}
	}
	for _, p := range o.ClusterCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("%w: invalid cluster CIDR %v", ErrBadOptions, p)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}
