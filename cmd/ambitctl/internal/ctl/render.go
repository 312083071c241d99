package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// maxCell bounds a table cell (the JSON output has everything).
const maxCell = 80

// column is one table column: the first of keys (normalized field names)
// present in a row gives the value; format, when set, turns it into text.
type column struct {
	header string
	keys   []string
	format func(v any, now time.Time) string
}

func col(header string, keys ...string) column { return column{header: header, keys: keys} }

var columns = map[string][]column{
	"workloads": {
		col("NAMESPACE", "namespace"),
		col("NAME", "name"),
		col("IPS", "ips", "ip", "addresses"),
		col("SERVICE ACCOUNT", "serviceaccount", "sa"),
		col("NODE", "node"),
		col("IDENTITY", "identity", "spiffeid"),
		col("ENROLLED", "enrolled"),
	},
	"certs": {
		col("IDENTITY", "id", "identity"),
		col("STATE", "state"),
		col("USABLE", "usable"),
		col("SERIAL", "serial"),
		{header: "NOT AFTER", keys: []string{"notafter"}, format: timeCell},
		{header: "EXPIRES IN", keys: []string{"notafter"}, format: untilCell},
		{header: "RENEW AT", keys: []string{"renewat"}, format: timeCell},
		col("FAILURES", "failures"),
		col("LAST ERROR", "lasterror"),
	},
	"policies": {
		col("KIND", "kind"),
		col("NAMESPACE", "namespace"),
		col("NAME", "name"),
		col("ACTION", "action"),
		col("MODE", "mode"),
		col("ACCEPTED", "accepted"),
		col("REASON", "reason"),
		{header: "ISSUES", keys: []string{"issues"}, format: countCell},
		col("MESSAGE", "message"),
	},
	"connections": {
		col("DIRECTION", "direction"),
		col("SOURCE", "sourceaddr"),
		col("DESTINATION", "destinationaddr"),
		col("WORKLOAD", "workload"),
		col("SOURCE IDENTITY", "sourceidentity"),
		col("DESTINATION IDENTITY", "destinationidentity"),
		col("POLICY", "policy"),
		col("BYTES SENT", "bytessent"),
		col("BYTES RECEIVED", "bytesreceived"),
		{header: "AGE", keys: []string{"ageseconds"}, format: ageCell},
	},
}

// nouns name a command's rows in messages.
var nouns = map[string]string{"workloads": "workloads", "certs": "certificates", "policies": "policies", "connections": "live connections"}

// renderCommand prints raw (the section, or the /connections snapshot) as
// a table for command.
func renderCommand(stdout, stderr io.Writer, command string, raw json.RawMessage, now time.Time) error {
	v, err := decode(raw)
	if err != nil {
		return err
	}
	if command == "connections" {
		snap, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("/connections: not a JSON object")
		}
		snap = normalizeKeys(snap)
		if n := intOf(snap["dropped"]); n > 0 {
			fmt.Fprintf(stderr, "ambitctl: the daemon's table was full at times: %d connections since it started are not listed (capacity %d)\n",
				n, intOf(snap["capacity"]))
		}
		v = snap["connections"]
	}
	return renderValue(stdout, stderr, nouns[command], v, columns[command], now)
}

func decode(raw json.RawMessage) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("the daemon sent invalid JSON: %w", err)
	}
	return v, nil
}

// renderValue prints a list of objects with cols, an object of objects as
// rows named by key, an object of scalars as FIELD/VALUE.
func renderValue(stdout, stderr io.Writer, noun string, v any, cols []column, now time.Time) error {
	var rows []map[string]any
	switch v := v.(type) {
	case nil:
	case []any:
		for _, e := range v {
			m, ok := e.(map[string]any)
			if !ok {
				m = map[string]any{"value": e}
			}
			rows = append(rows, normalizeKeys(m))
		}
	case map[string]any:
		if len(v) > 0 && !allObjects(v) {
			return renderFields(stdout, v, now)
		}
		for _, k := range sortedKeys(v) {
			m := normalizeKeys(v[k].(map[string]any))
			if _, ok := m["name"]; !ok {
				m["name"] = k
			}
			rows = append(rows, m)
		}
	default:
		_, err := fmt.Fprintln(stdout, cell(v, now))
		return err
	}
	if len(rows) == 0 {
		fmt.Fprintf(stderr, "ambitctl: no %s\n", noun)
		return nil
	}
	use := pickColumns(rows, cols)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	hdr := make([]string, len(use))
	for i, c := range use {
		hdr[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t"))
	for _, r := range rows {
		cells := make([]string, len(use))
		for i, c := range use {
			cells[i] = c.value(r, now)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// pickColumns keeps the columns some row has a value for; when none
// matches, every field of the rows becomes a column.
func pickColumns(rows []map[string]any, cols []column) []column {
	var use []column
	for _, c := range cols {
		if c.present(rows) {
			use = append(use, c)
		}
	}
	if len(use) > 0 {
		return use
	}
	seen := map[string]bool{}
	for _, r := range rows {
		for k := range r {
			seen[k] = true
		}
	}
	for _, k := range sortedKeys(seen) {
		use = append(use, col(strings.ToUpper(k), k))
	}
	return use
}

func (c column) present(rows []map[string]any) bool {
	for _, r := range rows {
		for _, k := range c.keys {
			if v, ok := r[k]; ok && v != nil {
				return true
			}
		}
	}
	return false
}

func (c column) value(r map[string]any, now time.Time) string {
	for _, k := range c.keys {
		if v, ok := r[k]; ok && v != nil {
			if c.format != nil {
				return clean(c.format(v, now))
			}
			return cell(v, now)
		}
	}
	return "-"
}

func renderFields(w io.Writer, m map[string]any, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "FIELD\tVALUE")
	for _, k := range sortedKeys(m) {
		fmt.Fprintf(tw, "%s\t%s\n", clean(k), cell(m[k], now))
	}
	return tw.Flush()
}

// cell formats a JSON value for a table.
func cell(v any, now time.Time) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case string:
		if v == "" {
			return "-"
		}
		return clean(v)
	case bool:
		if v {
			return "yes"
		}
		return "no"
	case json.Number:
		return v.String()
	case []any:
		if len(v) == 0 {
			return "-"
		}
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = cell(e, now)
		}
		return clean(strings.Join(parts, ","))
	case map[string]any:
		if len(v) == 0 {
			return "-"
		}
		parts := make([]string, 0, len(v))
		for _, k := range sortedKeys(v) {
			parts = append(parts, k+"="+cell(v[k], now))
		}
		return clean(strings.Join(parts, ","))
	}
	return clean(fmt.Sprint(v))
}

// clean makes untrusted text safe for one aligned cell: control
// characters (tabs, newlines, escapes) become spaces, runs of spaces
// fold, and the cell is cut at maxCell.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	return truncate(s, maxCell)
}

func parseTime(v any) (time.Time, bool) {
	s, ok := v.(string)
	if !ok || s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil && !t.IsZero()
}

func timeCell(v any, _ time.Time) string {
	t, ok := parseTime(v)
	if !ok {
		return cell(v, time.Time{})
	}
	return t.UTC().Format(time.RFC3339)
}

func untilCell(v any, now time.Time) string {
	t, ok := parseTime(v)
	if !ok {
		return "-"
	}
	if d := t.Sub(now); d >= 0 {
		return human(d)
	}
	return "expired " + human(now.Sub(t)) + " ago"
}

func ageCell(v any, _ time.Time) string {
	n, ok := v.(json.Number)
	if !ok {
		return cell(v, time.Time{})
	}
	f, err := n.Float64()
	if err != nil || f < 0 {
		return "-"
	}
	return human(time.Duration(f * float64(time.Second)))
}

func countCell(v any, now time.Time) string {
	if l, ok := v.([]any); ok {
		return fmt.Sprint(len(l))
	}
	return cell(v, now)
}

// human prints a duration the way kubectl prints ages: 45s, 3m12s, 5h3m,
// 12d4h.
func human(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

func intOf(v any) int64 {
	if n, ok := v.(json.Number); ok {
		i, _ := n.Int64()
		return i
	}
	return 0
}

// normalizeKeys lowercases keys and drops '_' and '-', so
// "serviceAccount", "ServiceAccount" and "service_account" match.
func normalizeKeys(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[normKey(k)] = v
	}
	return out
}

func normKey(k string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r == ' ' {
			return -1
		}
		return unicode.ToLower(r)
	}, k)
}

func allObjects(m map[string]any) bool {
	if len(m) == 0 {
		return false
	}
	for _, v := range m {
		if _, ok := v.(map[string]any); !ok {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
