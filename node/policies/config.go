package policies

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ambit-mesh/ambit/node/authz"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

// ErrBadConfig is wrapped by New for an invalid Config.
var ErrBadConfig = errors.New("policies: invalid config")

// ErrNotSynced is wrapped by WaitForSync when ctx ends before the first
// complete policy set was applied.
var ErrNotSynced = errors.New("policies: not synced")

// Defaults.
const (
	DefaultDebounce     = 100 * time.Millisecond
	DefaultStatusJitter = time.Second
	DefaultIstioRecheck = time.Minute
	DefaultStatusRetry  = 10 * time.Second
	DefaultStaleAfter   = 2 * time.Minute
)

// Discovery is the part of the discovery client the Istio switch uses:
// whether a group/version is served and with which resources.
// discovery.DiscoveryInterface (client-go) satisfies it. A NotFound error
// means the group/version is not served.
type Discovery interface {
	ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error)
}

// Config configures New.
type Config struct {
	// Dynamic talks to the API server (required).
	Dynamic dynamic.Interface
	// Engine receives every policy set (required).
	Engine *authz.Engine
	// Live (optional): after every Engine.Update its connections are
	// rechecked and those now denied are closed.
	Live *authz.Live
	// RootNamespace (optional) should be the Engine's root namespace; it
	// is only used to describe the scope of a fail-closed stand-in in
	// status messages and logs.
	RootNamespace string

	// Istio (optional) also reads security.istio.io AuthorizationPolicy
	// and PeerAuthentication (v1 if served, else v1beta1, per resource)
	// when those CRDs exist. Checked at Run and then every IstioRecheck
	// until both are found; their informers start when found.
	Istio bool
	// Discovery (required when Istio is set).
	Discovery Discovery
	// IstioRecheck (optional, default DefaultIstioRecheck).
	IstioRecheck time.Duration

	// WriteStatus (optional) writes each ambit object's Accepted and
	// PartiallyEnforced conditions to its status subresource when they
	// differ from what is there. Istio's objects are never written.
	WriteStatus bool
	// StatusJitter (optional, default DefaultStatusJitter; negative: none)
	// delays each status pass by a random time below it, so that of many
	// node daemons seeing the same change one writes first and the others
	// find the status already right. It never delays enforcement.
	StatusJitter time.Duration

	// Debounce (optional, default DefaultDebounce) coalesces a burst of
	// events into one apply: an apply runs Debounce after the first event
	// not yet applied. A change reaches the Engine and Live.Recheck within
	// Debounce plus the apply time (plus one more Debounce if it arrives
	// during an apply).
	Debounce time.Duration
	// StaleAfter (optional, default DefaultStaleAfter): see Status.Stale.
	StaleAfter time.Duration

	// Logger (optional, default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (optional, default time.Now): condition times,
	// apply times, staleness.
	Now func() time.Time
}

func (c *Config) validate() error {
	switch {
	case c.Dynamic == nil:
		return fmt.Errorf("%w: Dynamic is required", ErrBadConfig)
	case c.Engine == nil:
		return fmt.Errorf("%w: Engine is required", ErrBadConfig)
	case c.Istio && c.Discovery == nil:
		return fmt.Errorf("%w: Discovery is required with Istio", ErrBadConfig)
	case c.Debounce < 0:
		return fmt.Errorf("%w: negative Debounce %v", ErrBadConfig, c.Debounce)
	}
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.StatusJitter == 0 {
		c.StatusJitter = DefaultStatusJitter
	} else if c.StatusJitter < 0 {
		c.StatusJitter = 0
	}
	if c.IstioRecheck <= 0 {
		c.IstioRecheck = DefaultIstioRecheck
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}
