package remote

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestLastingRefusalKeepsTheAlertFiring: a bundle the engine refuses each
// time (another constitutional hash) is handed over again by the polls at
// most maxRefusedRetry apart, each refusal counted in
// acgs_policy_reloads_total{result="failure"}; ACGSPolicyReloadFailed
// fires on an increase of it over its range. The retries, plus OPA's
// default poll delay (at most 120 s), must fall within every range, so
// that the alert stays firing while the refusal lasts: at 10 min apart
// (the range itself) it resolved and fired again about every 10 minutes
// (review).
func TestLastingRefusalKeepsTheAlertFiring(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`alert: ACGSPolicyReloadFailed\s+expr: increase\(acgs_policy_reloads_total\{result="failure"\}\[(\w+)\]\) > 0`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("ACGSPolicyReloadFailed is not increase(acgs_policy_reloads_total{result=\"failure\"}[RANGE]) > 0 any more: check the retry wait against it")
	}
	window, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	const pollDelay = 120 * time.Second // OPA's default max_delay_seconds
	const margin = time.Minute          // scrapes and rule evaluations
	if gap := maxRefusedRetry + pollDelay + margin; gap >= window {
		t.Fatalf("a lasting refusal is counted up to %s apart (maxRefusedRetry %s, a poll %s, %s of scrapes): "+
			"ACGSPolicyReloadFailed's range of %s goes without one and the alert flaps", gap, maxRefusedRetry, pollDelay, margin, window)
	}
}
