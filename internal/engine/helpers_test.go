package engine_test

import (
	"log/slog"

	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

func inmemStore(data map[string]any) storage.Store {
	if data == nil {
		data = map[string]any{}
	}
	return inmem.NewFromObject(data)
}

// quiet keeps activation logs out of test and benchmark output.
var quiet = slog.New(slog.DiscardHandler)
