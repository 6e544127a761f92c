package loadgen

import (
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/inputgen"
)

// The scripts themselves run in wrk in internal/cli's TestWorkloadLuaVaried;
// here, what VariedLua accepts and what it writes into them.
func TestVariedLua(t *testing.T) {
	acgs, err := VariedLua("/v1/data/acgs/main/decision", "acgs", 7)
	if err != nil {
		t.Fatal(err)
	}
	opa, err := VariedLua("/v1/data/acgs/main/decision", "opa", 7)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(acgs, "local OPEN, CLOSE = '', ''") || !strings.Contains(opa, `local OPEN, CLOSE = '{"input":', '}'`) {
		t.Errorf("the dialects do not differ in the envelope only")
	}
	if strings.Replace(opa, "dialect opa", "dialect acgs", 1) != strings.Replace(acgs, "local OPEN, CLOSE = '', ''", `local OPEN, CLOSE = '{"input":', '}'`, 1) {
		t.Errorf("the dialects' scripts differ beyond the envelope")
	}
	for _, want := range []string{
		`wrk.path = "/v1/data/acgs/main/decision"`, "local SEED = 7", `local HASH = "` + inputgen.Hash + `"`,
		"CUM_PROHIBITED = 1\n", `RATE["network.http_get"] = 20`, `RATE["ui.render"] = 10`, `{"max_execution_time_seconds", 300}`,
		`{"personal_identifiable_information", 2592000}`, "function request()", "function done(", VariedSentPrefix,
	} {
		if !strings.Contains(acgs, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	for _, a := range append(append([]string{}, inputgen.Prohibited...), inputgen.NeedsExplanation...) {
		if !strings.Contains(acgs, `"`+a+`"`) {
			t.Errorf("script lacks action %q", a)
		}
	}
	if _, err := VariedLua("/p", "rego", 1); err == nil {
		t.Errorf("dialect rego accepted")
	}
	if _, err := VariedLua("p", "acgs", 1); err == nil {
		t.Errorf("relative path accepted")
	}
}

func TestLuaQuoteRefusesWhatJSONWouldEscape(t *testing.T) {
	for _, s := range []string{`a"b`, `a\b`, "a\nb", "é"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%q was quoted", s)
				}
			}()
			luaQuote(s)
		}()
	}
	if got := luaQuote("data.read_public"); got != `"data.read_public"` {
		t.Errorf("got %s", got)
	}
}
