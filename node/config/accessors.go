package config

import (
	"log/slog"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/labels"
)

// logLevels are the levels --log-level accepts (the same names as the admin
// endpoint's /logging).
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

// The accessors below return the parsed form of a field. They are meant for
// a Config that passed Validate; on an invalid field they return the zero
// value (Nothing() for selectors, so an invalid selector never widens).

// Level returns LogLevel as an slog.Level (info when invalid).
func (c Config) Level() slog.Level {
	if l, ok := logLevels[strings.ToLower(c.LogLevel)]; ok {
		return l
	}
	return slog.LevelInfo
}

// SPIFFETrustDomain returns TrustDomain as a go-spiffe value.
func (c Config) SPIFFETrustDomain() spiffeid.TrustDomain {
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return spiffeid.TrustDomain{}
	}
	return td
}

// Aliases returns TrustDomainAliases as a list (empty entries and
// surrounding spaces dropped, duplicates removed, order kept).
func (c Config) Aliases() []string {
	var out []string
	for _, a := range strings.Split(c.TrustDomainAliases, ",") {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// SPIFFEAliases returns Aliases as go-spiffe values (invalid names dropped).
func (c Config) SPIFFEAliases() []spiffeid.TrustDomain {
	var out []spiffeid.TrustDomain
	for _, a := range c.Aliases() {
		if td, err := spiffeid.TrustDomainFromString(a); err == nil {
			out = append(out, td)
		}
	}
	return out
}

// NamespaceSelector returns MeshNamespaceSelector parsed.
func (c Config) NamespaceSelector() labels.Selector { return selector(c.MeshNamespaceSelector) }

// PodOptOutSelector returns MeshPodOptOut parsed.
func (c Config) PodOptOutSelector() labels.Selector { return selector(c.MeshPodOptOut) }

func selector(s string) labels.Selector {
	if strings.TrimSpace(s) == "" {
		return labels.Nothing()
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return labels.Nothing()
	}
	return sel
}

// Origin returns where the value of flagName came from: "--flag", or the
// environment variable Parse read it from ("AMBIT_FLAG", "NODE_NAME",
// "POD_NAMESPACE"). For a default or a hand-built Config it is "--flag".
func (c Config) Origin(flagName string) string { return c.source(flagName) }

// ExcludeNamespaces returns CNIExcludeNamespaces as a list (empty entries and
// surrounding spaces dropped).
func (c Config) ExcludeNamespaces() []string {
	var out []string
	for _, ns := range strings.Split(c.CNIExcludeNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}
