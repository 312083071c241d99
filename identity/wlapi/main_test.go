package wlapi_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Servers, clients and managers must leave no goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
