package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"

	"sigs.k8s.io/yaml"
)

// maxBody bounds what ambitctl reads from the admin endpoint (a full
// connection table of 10,000 entries is about 4 MB of JSON).
const maxBody = 64 << 20

// execute reaches the target, fetches what the command needs and prints it.
func execute(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	if o.command == "version" {
		_, err := fmt.Fprintf(stdout, "ambitctl %s\n", clientVersion())
		return err
	}
	if o.file != "" {
		raw, err := readFile(o.file, o.section, o.command)
		if err != nil {
			return err
		}
		return output(o, raw, stdout, stderr)
	}
	base := o.admin
	var forwardLog func() string
	if base == "" {
		fw, err := openForward(ctx, o)
		if err != nil {
			return err
		}
		defer fw.Close()
		base, forwardLog = fw.BaseURL, fw.Errors
	}
	c := &client{base: base, http: &http.Client{}}
	var raw json.RawMessage
	var err error
	switch {
	case o.command == "log":
		var text string
		text, err = c.logging(ctx, o.level, o.access)
		if err == nil {
			_, err = io.WriteString(stdout, text)
			return err
		}
	case o.section == "":
		raw, err = c.get(ctx, "/connections", nil)
	default:
		raw, err = c.section(ctx, o.section)
	}
	if err != nil {
		if forwardLog != nil {
			if msg := forwardLog(); msg != "" {
				err = fmt.Errorf("%w (port-forward: %s)", err, msg)
			}
		}
		return err
	}
	return output(o, raw, stdout, stderr)
}

// output prints raw as JSON, YAML or a table.
func output(o *options, raw json.RawMessage, stdout, stderr io.Writer) error {
	switch o.output {
	case "json":
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return fmt.Errorf("the daemon sent invalid JSON: %w", err)
		}
		buf.WriteByte('\n')
		_, err := stdout.Write(buf.Bytes())
		return err
	case "yaml":
		y, err := yaml.JSONToYAML(raw)
		if err != nil {
			return fmt.Errorf("the daemon sent invalid JSON: %w", err)
		}
		_, err = stdout.Write(y)
		return err
	}
	return renderCommand(stdout, stderr, o.command, raw, o.now())
}

// readFile reads a saved dump: the -o json output of the same command, or
// a whole /config_dump (an object holding the command's section).
func readFile(path, section, command string) (json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxBody)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%s: not JSON (save it with -o json)", path)
	}
	if section != "" {
		var dump map[string]json.RawMessage
		if json.Unmarshal(b, &dump) == nil {
			if s, ok := dump[section]; ok {
				return s, nil
			}
		}
	}
	_ = command
	return b, nil
}

// logging reads /logging, or changes the levels given (non-empty).
func (c *client) logging(ctx context.Context, level, access string) (string, error) {
	method, q := http.MethodGet, url.Values{}
	if level != "" {
		q.Set("level", level)
	}
	if access != "" {
		q.Set("access_log", access)
	}
	u := c.base + "/logging"
	if len(q) > 0 {
		method, u = http.MethodPost, u+"?"+q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("admin endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", &statusError{method: method, url: u, code: resp.StatusCode, body: truncate(oneLine(string(body)), 300)}
	}
	return string(body), nil
}

// clientVersion is the module version and VCS revision ambitctl was built
// from.
func clientVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}

type client struct {
	base string
	http *http.Client
}

// section fetches one /config_dump section.
func (c *client) section(ctx context.Context, name string) (json.RawMessage, error) {
	raw, err := c.get(ctx, "/config_dump", url.Values{"include": {name}})
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusBadRequest && strings.Contains(se.body, "unknown section") {
		return nil, fmt.Errorf("the daemon's /config_dump has no %q section (%s)", name, se.body)
	}
	if err != nil {
		return nil, err
	}
	var dump map[string]json.RawMessage
	if err := json.Unmarshal(raw, &dump); err != nil {
		return nil, fmt.Errorf("/config_dump: not a JSON object: %w", err)
	}
	s, ok := dump[name]
	if !ok {
		return nil, fmt.Errorf("/config_dump: no %q section in the answer", name)
	}
	return s, nil
}

type statusError struct {
	method string // default GET
	url    string
	code   int
	body   string
}

func (e *statusError) Error() string {
	m := e.method
	if m == "" {
		m = http.MethodGet
	}
	return fmt.Sprintf("%s %s: %d %s: %s", m, e.url, e.code, http.StatusText(e.code), e.body)
}

func (c *client) get(ctx context.Context, path string, q url.Values) (json.RawMessage, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("GET %s: answer larger than %d bytes", u, maxBody)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{url: u, code: resp.StatusCode, body: truncate(oneLine(string(body)), 300)}
	}
	if !json.Valid(body) {
		return nil, fmt.Errorf("GET %s: the answer is not JSON", u)
	}
	return body, nil
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
