package redirect

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const helperEnv = "AMBIT_REDIRECT_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(helperMain(spec))
	}
	goleak.VerifyTestMain(m)
}

// helperSpec is what a helper daemon process applies.
type helperSpec struct {
	PinDir, StateDir string
	Pods             []PodNetns
	Configs          []Config
	// Serve accepts on every listener and closes what it accepts.
	Serve bool
}

// helperMain is a separate daemon process: it applies the pods, prints
// "ready" and runs until killed.
func helperMain(spec string) int {
	var s helperSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Println("bad spec:", err)
		return 2
	}
	ctx := context.Background()
	m, err := New(ctx, Options{PinDir: s.PinDir, StateDir: s.StateDir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println("new:", err)
		return 1
	}
	for i, p := range s.Pods {
		if err := m.Apply(ctx, p, s.Configs[i]); err != nil {
			fmt.Println("apply:", err)
			return 1
		}
	}
	fmt.Println("ready")
	select {}
}

// startHelper runs a helper daemon process and returns a func that
// SIGKILLs it (as the OOM killer or a crash would).
func startHelper(t *testing.T, s helperSpec) (kill func()) {
	t.Helper()
	b, _ := json.Marshal(s)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case l := <-line:
		if l != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper: %s", l)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("helper not ready")
	}
	killed := false
	kill = func() {
		if !killed {
			killed = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(kill)
	return kill
}
