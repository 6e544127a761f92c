package gateway_test

import (
	"runtime"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// TestSDKDecodesInPlace guards the patch in third_party/go-sdk.patch: the
// MCP SDK's JSON decoding must not allocate a 32 KiB stream buffer per
// call (as v1.8.0 does unpatched, twice per message), which cost the
// gateway and every direct call about half their CPU (third_party/README.md).
// It fails when go.mod's replace is dropped or the SDK is moved to a
// version without the patch.
func TestSDKDecodesInPlace(t *testing.T) {
	msg := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"remote__noop","arguments":{"path":"/tmp/x"}}}`)
	if _, err := jsonrpc.DecodeMessage(msg); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		if _, err := jsonrpc.DecodeMessage(msg); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	// Unpatched: at least 64 KiB (two Unmarshal calls per message);
	// patched: a few hundred bytes. 16 KiB leaves room for the runtime's
	// own allocations during the loop.
	if per > 16<<10 {
		t.Fatalf("decoding one JSON-RPC message allocated %d bytes; the SDK is not the patched copy in third_party/go-sdk (see third_party/README.md)", per)
	}
	t.Logf("%d bytes allocated per decoded message", per)
}
