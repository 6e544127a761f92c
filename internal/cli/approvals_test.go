package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/acgs-lite/acgs/internal/gateway"
)

// approvalsRun runs `acgs approvals args...` against the admin API at url.
func approvalsRun(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	out, _, err := perfRun(t, append(append([]string{"approvals"}, args...), "--url", url, "--token", "admin")...)
	return out, err
}

// hostile is a held call whose every field an agent or an upstream chose
// to rewrite the approver's terminal: a carriage return, cursor movement
// and line erasure (ESC, and the C1 CSI U+009B), a tab to shift the
// columns, a right-to-left override, a byte that is not UTF-8, and an
// argument whose 80th byte falls inside a character.
func hostile() gateway.Approval {
	return gateway.Approval{
		ID:         "apr_1\x1b]0;title\x07",
		DecisionID: "dec\r\x1b[2K",
		Agent:      "agent\u009b2K\u202e",
		Session:    "s",
		Tool:       "local__delete_x\r\x1b[1A\x1b[2Kapr_FAKE  agent-1  local__read_file\t{}",
		Upstream:   "local",
		Arguments: map[string]any{
			"a": "\u009b1A\u202eevil\x1b[2K\xff",
			"b": strings.Repeat("x", 60) + strings.Repeat("é", 20),
		},
		Reasons: []string{"Tool requires human approval\x1b[2K"},
		Created: time.Now(),
		Expires: time.Now().Add(time.Minute),
	}
}

// terminalSafe fails the test when out holds anything a terminal acts on:
// a control character other than the line break, a C1 control, a format
// character (U+202E), or bytes that are not UTF-8.
func terminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: not UTF-8 (a character cut, or a raw byte): %q", what, out)
	}
	for _, r := range out {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' {
			t.Errorf("%s: prints %U raw: %q", what, r, out)
			return
		}
	}
}

// TestApprovalsCLIEscapesWhatAgentsChose: `acgs approvals list` (table and
// --json) and approve/deny print the fields of a held call escaped, so
// that an agent cannot forge the row the approver reads: one line per
// call, no escape sequence reaches the terminal, and --json still decodes
// to the same values.
func TestApprovalsCLIEscapesWhatAgentsChose(t *testing.T) {
	a := hostile()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == gateway.ApprovalsPath:
			_ = json.NewEncoder(w).Encode(gateway.ApprovalList{Approvals: []gateway.Approval{a}})
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/approve"):
			_ = json.NewEncoder(w).Encode(gateway.ApprovalResult{Verdict: gateway.Approved, Approval: a})
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/deny"):
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"code":"resource_not_found","message":"no pending approval \u001b[2K\u009b"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	out, err := approvalsRun(t, srv.URL, "list")
	if err != nil {
		t.Fatal(err)
	}
	terminalSafe(t, "list", out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("list printed %d lines for one call, want a header and one row:\n%s", len(lines), out)
	}
	for _, want := range []string{`local__delete_x\r\x1b[1A\x1b[2Kapr_FAKE  agent-1  local__read_file\t{}`, `agent\u009b2K\u202e`, `apr_1\x1b]0;title\a`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q does not show %s", lines[1], want)
		}
	}

	out, err = approvalsRun(t, srv.URL, "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	terminalSafe(t, "list --json", out)
	var back gateway.ApprovalList
	if err := json.Unmarshal([]byte(out), &back); err != nil || len(back.Approvals) != 1 || back.Approvals[0].Tool != a.Tool || back.Approvals[0].Agent != a.Agent {
		t.Errorf("--json does not decode to the same call: %v %+v", err, back)
	}

	out, err = approvalsRun(t, srv.URL, "approve", "apr_1")
	if err != nil {
		t.Fatal(err)
	}
	terminalSafe(t, "approve", out)
	if !strings.Contains(out, `local__delete_x\r\x1b[1A`) || strings.Count(out, "\n") != 1 {
		t.Errorf("approve printed %q", out)
	}

	out, err = approvalsRun(t, srv.URL, "deny", "apr_1")
	if err == nil {
		t.Fatal("deny of an unknown id succeeded")
	}
	terminalSafe(t, "deny's error", err.Error()+out)
}

// TestShortenKeepsCharactersWhole: shorten cuts at a character's start.
func TestShortenKeepsCharactersWhole(t *testing.T) {
	for n := 4; n < 30; n++ {
		for _, s := range []string{strings.Repeat("é", 20), "ab" + strings.Repeat("€", 10), strings.Repeat("😀", 8)} {
			got := shorten(s, n)
			if !utf8.ValidString(got) || len(got) > n && len(s) > n {
				t.Fatalf("shorten(%q, %d) = %q", s, n, got)
			}
		}
	}
	if got := printable("ok é ü 😀 \\ '\""); got != "ok é ü 😀 \\ '\"" {
		t.Errorf("printable changed printable text: %q", got)
	}
}
