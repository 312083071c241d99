// Package config provides the node daemon's start-up configuration: the
// command-line flags the Helm chart passes (charts/ambit/templates/daemonset.yaml
// is the contract), their AMBIT_* environment variables, and the validation
// that turns a bad value into one line naming the problem.
//
// Use:
//
//	cfg, err := config.Parse(os.Args[1:], os.Getenv)
//	if errors.Is(err, flag.ErrHelp) { config.PrintUsage(os.Stdout); os.Exit(0) }
//	if err != nil { fmt.Fprintln(os.Stderr, "ambit:", err); os.Exit(2) } // errors.Is(err, ErrUsage)
//
// Design:
//
//   - Precedence is flag, then environment, then default. Every flag --foo-bar
//     has the variable AMBIT_FOO_BAR; an empty variable counts as unset. The
//     node name and the root namespace also fall back to the downward-API
//     variables the chart sets (NODE_NAME, POD_NAMESPACE), so an empty
//     --node-name still finds the node.
//   - Parse reads, Validate judges. Parse ends by calling Validate, so a Config
//     returned without error is valid; Validate is exported for callers (tests,
//     the demo) that build a Config by hand.
//   - Every problem is a *UsageError: one line, `--metrics-addr "x:99999": port
//     out of range`, naming the environment variable instead of the flag when
//     the value came from there. It wraps ErrUsage so the caller exits 2 with
//     one line, and the caller, not this package, prints it: the FlagSet's own
//     output is discarded (the flag package would otherwise print the whole
//     usage text for one typo).
//   - Only the first problem is reported, in the order the chart passes the
//     flags: the operator fixes it and sees the next one; a list of ten lines
//     is not "one line".
//   - Checks made at start are the ones that cannot become valid later: syntax
//     (addresses, ports, selectors, the trust domain, the CA URL), policy (the
//     admin endpoint is loopback only, the CA is reached over https) and the
//     files the daemon needs before it can do anything (the projected token
//     must exist and be non-empty, the bundle must hold a certificate). Files
//     are re-read later by their users (kubelet rotates the token); this only
//     fails fast on a mount that is missing altogether.
//   - Files are stat'ed before they are opened: a FIFO given as the token
//     would otherwise block start-up until a writer appeared.
//   - The three listeners (metrics, ready, admin) may not share a port where
//     their addresses overlap (same host, or one on all addresses): the
//     second bind would fail later with a less useful message.
//   - Not checked here, because they are facts of the node rather than of
//     the configuration: whether bpffs is mounted at BPFPinDir, whether the
//     socket's directory exists, whether the Go runtime is in FIPS mode when
//     FIPS is set. Their users report those.
//   - Empty label selectors are refused: labels.Parse("") selects everything,
//     which would enrol every namespace (or opt every pod out) by accident.
package config
