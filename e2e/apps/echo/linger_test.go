package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestLingerOutlivesTheSignalByItsDuration(t *testing.T) {
	parent, term := context.WithCancel(context.Background())
	var out syncBuf
	ctx, cancel := lingerContext(parent, 300*time.Millisecond, &out)
	defer cancel()
	time.Sleep(50 * time.Millisecond)
	if ctx.Err() != nil || out.String() != "" {
		t.Fatalf("before the signal: err %v, output %q", ctx.Err(), out.String())
	}
	t0 := time.Now()
	term()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the lingering context never ended")
	}
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("ended %s after the signal, want at least the 300ms linger", d)
	}
	if !strings.HasPrefix(out.String(), "term at=") {
		t.Errorf("output %q, want a term line", out.String())
	}
}

func TestLingerCancelEndsAtOnce(t *testing.T) {
	parent, term := context.WithCancel(context.Background())
	defer term()
	ctx, cancel := lingerContext(parent, time.Hour, &syncBuf{})
	cancel()
	if ctx.Err() == nil {
		t.Fatal("cancel did not end the context")
	}
	term() // after cancel: no term line, no timer left
}
