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
	"strings"
)

// maxBody bounds what ambitctl reads from the admin endpoint (a full
// connection table of 10,000 entries is about 4 MB of JSON).
const maxBody = 64 << 20

// execute reaches the target, fetches what the command needs and prints it.
func execute(ctx context.Context, o *options, stdout, stderr io.Writer) error {
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
	if o.section == "" {
		raw, err = c.get(ctx, "/connections", nil)
	} else {
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
	if o.output == "json" {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return fmt.Errorf("the daemon sent invalid JSON: %w", err)
		}
		buf.WriteByte('\n')
		_, err := stdout.Write(buf.Bytes())
		return err
	}
	return renderCommand(stdout, stderr, o.command, raw, o.now())
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
	url  string
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("GET %s: %d %s: %s", e.url, e.code, http.StatusText(e.code), e.body)
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
