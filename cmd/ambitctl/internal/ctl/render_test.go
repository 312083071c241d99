package ctl

import (
	"encoding/json"
	"testing"
	"time"
)

func TestCells(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 42 * time.Second: "42s", 5*time.Minute + 12*time.Second: "5m12s", 1500 * time.Millisecond: "2s",
		3*time.Hour + 4*time.Minute: "3h4m", 47 * time.Hour: "47h0m", 50 * time.Hour: "2d2h",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
	if got := untilCell(now.Add(-90*time.Second).Format(time.RFC3339), now); got != "expired 1m30s ago" {
		t.Errorf("untilCell(past) = %q", got)
	}
	if got := untilCell("not a time", now); got != "-" {
		t.Errorf("untilCell(garbage) = %q", got)
	}
	if got := ageCell(json.Number("-1"), now); got != "-" {
		t.Errorf("ageCell(-1) = %q", got)
	}
	long := ""
	for range 100 {
		long += "x"
	}
	for in, want := range map[any]string{
		"a\x1b[31mb\nc": "a [31mb c", "": "-", nil: "-", true: "yes", json.Number("7"): "7",
		long: long[:maxCell-1] + "…",
	} {
		if got := cell(in, now); got != want {
			t.Errorf("cell(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cell([]any{"a", json.Number("1")}, now); got != "a,1" {
		t.Errorf("list cell = %q", got)
	}
	if got := cell(map[string]any{"b": "2", "a": "1"}, now); got != "a=1,b=2" {
		t.Errorf("map cell = %q", got)
	}
	if normKey("service_Account") != "serviceaccount" || normKey("ServiceAccount") != "serviceaccount" {
		t.Error("normKey")
	}
}
