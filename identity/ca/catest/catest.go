// Package catest runs the built-in CA in-process for tests, benchmarks and
// the demo: hand-written fakes of its Authenticator and PodLocator, and Env,
// a real HTTPS CA on 127.0.0.1 with an intermediate under a test root.
package catest

import (
	"context"
	"fmt"
	"sync"

	"github.com/ambit-mesh/ambit/identity/ca"
)

// Authenticator maps tokens to callers; unknown tokens are refused with
// ca.ErrUnauthenticated.
type Authenticator struct {
	mu     sync.Mutex
	tokens map[string]ca.Caller
	errs   map[string]error
}

// Set makes token authenticate as c.
func (a *Authenticator) Set(token string, c ca.Caller) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tokens == nil {
		a.tokens = map[string]ca.Caller{}
	}
	a.tokens[token] = c
}

// SetError makes token fail with err.
func (a *Authenticator) SetError(token string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.errs == nil {
		a.errs = map[string]error{}
	}
	a.errs[token] = err
}

// Authenticate implements ca.Authenticator.
func (a *Authenticator) Authenticate(_ context.Context, token string) (ca.Caller, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err, ok := a.errs[token]; ok {
		return ca.Caller{}, err
	}
	if c, ok := a.tokens[token]; ok {
		return c, nil
	}
	return ca.Caller{}, fmt.Errorf("%w: unknown token", ca.ErrUnauthenticated)
}

// Pods is an in-memory ca.PodLocator.
type Pods struct {
	mu   sync.Mutex
	pods map[[3]string]int
	err  error
}

// Add records a pod of namespace/serviceAccount on node.
func (p *Pods) Add(node, namespace, serviceAccount string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pods == nil {
		p.pods = map[[3]string]int{}
	}
	p.pods[[3]string{node, namespace, serviceAccount}]++
}

// Remove forgets one such pod.
func (p *Pods) Remove(node, namespace, serviceAccount string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := [3]string{node, namespace, serviceAccount}
	if p.pods[k] > 1 {
		p.pods[k]--
		return
	}
	delete(p.pods, k)
}

// SetError makes every lookup fail with err (nil: answer again).
func (p *Pods) SetError(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

// HasPod implements ca.PodLocator.
func (p *Pods) HasPod(_ context.Context, node, namespace, serviceAccount string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return false, p.err
	}
	return p.pods[[3]string{node, namespace, serviceAccount}] > 0, nil
}
