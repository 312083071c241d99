package identity_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Manager goroutine must end with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
