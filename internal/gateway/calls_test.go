package gateway_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/acgs-lite/acgs/internal/gateway"
)

// fingerprint is what the decision log names an admin token by: the first
// 16 hex digits of its SHA-256.
func fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}

// TestApprovalRecordNamesTheAdminToken: with several admin tokens (a
// rotation, or one per approver), the decision log's record of a verdict
// names the token it came with, by its position in the list and its
// fingerprint, beside the "by" the approver claims, and never holds the
// token itself. The gateway's own verdicts name none.
func TestApprovalRecordNamesTheAdminToken(t *testing.T) {
	const oldToken = "admin-old-rotated-token"
	e := startEnv(t, envOptions{adminTokens: []string{oldToken, adminToken}, extraYAML: "approvals: {timeout: 30s, max_pending: 1}\n"})
	gw := e.agent(t, "token-1")

	first := callAsync(t, gw, "remote__delete_record", map[string]any{"id": "1"})
	a := e.waitPending(t, 1)[0]
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+a.ID+"/approve", adminToken, gateway.ApprovalRequest{By: "alice"}, nil); code != http.StatusOK {
		t.Fatalf("approve: %d", code)
	}
	if r := <-first; r.err != nil || r.res.IsError {
		t.Fatalf("approved call: %+v %v", r.res, r.err)
	}
	second := callAsync(t, gw, "remote__delete_record", map[string]any{"id": "2"})
	b := e.waitPending(t, 1)[0]
	if res := call(t, gw, "remote__delete_record", map[string]any{"id": "3"}); !res.IsError { // over max_pending: the gateway refuses
		t.Fatalf("over max_pending: %q", text(res))
	}
	if code := e.admin(t, http.MethodPost, gateway.ApprovalsPath+"/"+b.ID+"/deny", oldToken, gateway.ApprovalRequest{By: "alice"}, nil); code != http.StatusOK {
		t.Fatalf("deny: %d", code)
	}
	<-second
	e.stop()

	want := map[string]map[string]any{
		a.ID: {"position": float64(2), "sha256": fingerprint(adminToken)},
		b.ID: {"position": float64(1), "sha256": fingerprint(oldToken)},
	}
	seen := 0
	for _, r := range e.records(t) {
		res, _ := r["result"].(map[string]any)
		if r["path"] != "acgs/gateway/approval" {
			continue
		}
		id, _ := res["approval_id"].(string)
		tok, _ := res["admin_token"].(map[string]any)
		if id == "" { // the gateway's refusal at the bound
			if res["by"] != "gateway" || tok != nil {
				t.Errorf("the gateway's refusal: %v, want by gateway and no admin token", res)
			}
			continue
		}
		seen++
		if res["by"] != "alice" || tok["position"] != want[id]["position"] || tok["sha256"] != want[id]["sha256"] {
			t.Errorf("verdict record of %s: %v, want by alice and admin_token %v", id, res, want[id])
		}
	}
	if seen != 2 {
		t.Errorf("%d approver verdicts in the log, want 2", seen)
	}
	raw, err := os.ReadFile(e.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), adminToken) || strings.Contains(string(raw), oldToken) {
		t.Error("the decision log holds an admin token")
	}
}
