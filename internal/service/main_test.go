package service_test

import (
	"testing"

	"github.com/acgs-lite/acgs/internal/testenv"
)

// TestMain removes the acgs binary the cluster tests build (testenv.ACGSBinary).
func TestMain(m *testing.M) { testenv.Main(m) }
