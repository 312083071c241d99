package config

import (
	"errors"
	"flag"
	"strings"
)

// Parse reads the daemon's flags from args (without the program name) and
// fills what they leave unset from the environment through getenv (nil
// means an empty environment): flag, then AMBIT_<FLAG>, then default; an
// empty variable is unset. An empty node name or root namespace falls back
// to NODE_NAME / POD_NAMESPACE; POD_NAME and POD_NAMESPACE fill PodName and
// PodNamespace. Parse then calls Validate.
//
// Errors: flag.ErrHelp as is for -h/--help (print PrintUsage, exit 0);
// anything else is a one-line *UsageError wrapping ErrUsage (exit 2), and
// the returned Config is the zero value.
func Parse(args []string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	c := Default()
	fs := flagSet(&c)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, flagError(err)
	}
	if fs.NArg() > 0 {
		return Config{}, &UsageError{Source: "argument", Value: fs.Arg(0), Reason: "unexpected (the daemon takes flags only)"}
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.origin = map[string]string{}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if envErr != nil || set[f.Name] {
			return
		}
		env := EnvName(f.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			reason := "invalid value"
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				reason = "not a boolean (want true or false)"
			}
			envErr = &UsageError{Source: env, Value: v, Reason: reason, Err: err}
			return
		}
		c.origin[f.Name] = env
	})
	if envErr != nil {
		return Config{}, envErr
	}

	c.PodName = getenv(EnvPodName)
	c.PodNamespace = getenv(EnvPodNamespace)
	if c.NodeName == "" {
		if v := getenv(EnvNodeName); v != "" {
			c.NodeName = v
			c.origin["node-name"] = EnvNodeName
		}
	}
	if c.RootNamespace == "" && c.PodNamespace != "" {
		c.RootNamespace = c.PodNamespace
		c.origin["root-namespace"] = EnvPodNamespace
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// flagError turns the flag package's message into a UsageError that names
// the flag the way the chart writes it (--name).
func flagError(err error) error {
	msg := err.Error()
	const undefined = "flag provided but not defined: "
	if name, ok := strings.CutPrefix(msg, undefined); ok {
		return &UsageError{Source: "--" + strings.TrimLeft(name, "-"), Reason: "unknown flag", Err: err, noValue: true}
	}
	// "invalid boolean value ...", "flag needs an argument: -x", "bad flag syntax: ---x".
	return &UsageError{Reason: msg, Err: err}
}
