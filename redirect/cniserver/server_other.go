//go:build !linux

package cniserver

import (
	"context"

	"github.com/ambit-mesh/ambit/redirect"
)

// Server is not available on this platform (SO_PEERCRED, nsfs, seqpacket
// descriptors are Linux's); New returns redirect.ErrNotSupported.
type Server struct{}

// New returns redirect.ErrNotSupported.
func New(Options) (*Server, error) { return nil, redirect.ErrNotSupported }

// Stats returns zeros.
func (*Server) Stats() Stats { return Stats{} }

// Serve returns redirect.ErrNotSupported.
func (*Server) Serve(context.Context) error { return redirect.ErrNotSupported }

// Close returns nil.
func (*Server) Close() error { return nil }
