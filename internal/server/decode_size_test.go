package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/acgs-lite/acgs/internal/telemetry"
)

// TestDecodedSizeIsTheLogsCount: the size decodeJSONSized counts while it
// builds a value is what the decision log would count walking it
// (telemetry.ValueSize), never less: the log takes it instead of walking
// the input on the request path, and a smaller count would let its queue
// hold more than its bound in bytes. A body the fast path does not decode
// (a string with an escape) has no count (0): the log walks it.
func TestDecodedSizeIsTheLogsCount(t *testing.T) {
	bodies := []string{
		`{}`, `[]`, `null`, `true`, `"x"`, `12.5e3`,
		`{"a":[{},{},[],[[]],null,false,true,0,-1.5,"héllo ✓"],"b":{"c":{"d":{}}},"":""}`,
		`[{"input":{"x":1}},{"input":[1,2,3]}]`,
	}
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "requests", "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, string(b), `{"input":`+string(b)+`}`)
	}
	for _, body := range bodies {
		v, size, err := decodeJSONSized([]byte(body), 100)
		if err != nil {
			t.Fatalf("%.60s: %v", body, err)
		}
		if want := telemetry.ValueSize(v); size != want {
			t.Errorf("%.60s: counted %d, the log's walk counts %d", body, size, want)
		}
	}
	if _, size, err := decodeJSONSized([]byte(`{"a":"\n"}`), 100); err != nil || size != 0 {
		t.Errorf("a body with an escape: size %d (%v), want 0 (not counted)", size, err)
	}
}
