package service_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

const clusterAdminToken = "cluster-admin-token"

var epochRE = regexp.MustCompile(`"epoch":\s*(\d+)`)

// decisionKeys counts the decision entries (of one epoch, or all when
// epoch is "*") stored across every node.
func decisionKeys(tb testing.TB, rc *testenv.RedisCluster, epoch string) int {
	tb.Helper()
	n := 0
	for _, node := range rc.Nodes {
		out, err := node.Do("KEYS", "acgs:d:"+epoch+":*")
		if err != nil {
			tb.Fatalf("KEYS on %s: %v", node.Addr(), err)
		}
		if out != "" {
			n += len(strings.Split(out, "\n"))
		}
	}
	return n
}

// clusterURL is the REDIS_URL listing every node when the configuration
// accepts that form; otherwise one seed node, from which rueidis discovers
// the cluster by itself (CLUSTER SLOTS) — the same client, the same slots.
// Config.Validate checks each comma-separated part as a whole URL, while the
// cache (and README) take "redis://[:pw@]h1:p1,h2:p2": until the two agree
// the seed form is what a deployment can use.
func clusterURL(tb testing.TB, rc *testenv.RedisCluster) string {
	c := config.Default()
	c.Cache.RedisURL = rc.URL()
	c.Cache.SigningKey = strings.Repeat("k", 32)
	if err := c.Validate(); err == nil {
		return rc.URL()
	} else {
		tb.Logf("REDIS_URL with every node refused by the configuration (%v); using the seed node form", err)
	}
	seed := "redis://"
	if pw := rc.Nodes[0].Password(); pw != "" {
		seed += ":" + pw + "@"
	}
	return seed + rc.Nodes[0].Addr()
}

// TestL2SharedOnRedisCluster runs two instances against a 3-master Redis
// Cluster: a decision made by one is answered by the other from L2 (each
// request's key hashing to its own slot, so all masters take part), and a
// cache flush on one (DELETE /v1/cache) moves both to a new epoch, after
// which neither answers from entries written before it.
func TestL2SharedOnRedisCluster(t *testing.T) {
	rc := testenv.StartRedisCluster(t, 3)
	redisURL := clusterURL(t, rc)
	mutate := func(c *config.Config) {
		c.Cache.RedisURL = redisURL
		c.Cache.SigningKey = strings.Repeat("cluster-signing-key-", 2)
		c.Cache.L2Timeout = 500 * time.Millisecond // correctness, not latency: a busy test machine must not turn a hit into a miss
		c.AdminTok = []string{clusterAdminToken}
	}
	a := servicetest.Start(t, mutate)
	b := servicetest.Start(t, mutate)
	for _, in := range []*servicetest.Instance{a, b} {
		waitFor(t, 15*time.Second, in.URL+" connected to the cluster", func() bool {
			_, doc, _ := httpDo(t, http.MethodGet, in.URL+"/v1/data/acgs/main/health", "", nil)
			cs, _ := doc["cache_stats"].(map[string]any)
			return cs["l2_healthy"] == true
		})
	}
	decide := func(in *servicetest.Instance, body []byte) map[string]any {
		t.Helper()
		code, doc, raw := httpDo(t, http.MethodPost, in.URL+"/v1/data/acgs/main/decision", "", body)
		if code != http.StatusOK {
			t.Fatalf("decision on %s: %d %s", in.URL, code, raw)
		}
		return doc
	}
	// writtenBy waits until the write-behind queue of the deciding instance
	// has put a new entry in Redis, so the other instance finds it.
	decideAndStore := func(in *servicetest.Instance, body []byte) map[string]any {
		t.Helper()
		before := decisionKeys(t, rc, "*")
		doc := decide(in, body)
		waitFor(t, 10*time.Second, "the decision written to the cluster", func() bool { return decisionKeys(t, rc, "*") > before })
		return doc
	}
	same := func(x, y map[string]any) bool {
		for _, f := range []string{"allow", "compliance_score", "reasons", "policy_revision"} {
			if !jsoneq.Equal(x[f], y[f]) {
				return false
			}
		}
		return true
	}

	requests := map[string][]byte{}
	for _, name := range []string{"safe", "dangerous", "complex", "data_access", "low_trust"} {
		body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		requests[name] = body
	}
	for _, name := range []string{"safe", "dangerous", "complex", "data_access", "low_trust"} {
		t.Run("shared/"+name, func(t *testing.T) {
			first := decideAndStore(a, requests[name])
			if first["cache_tier"] != "none" {
				t.Fatalf("first decision on A from cache tier %v", first["cache_tier"])
			}
			fromL2 := decide(b, requests[name])
			if fromL2["cache_tier"] != "l2" || fromL2["cache_hit"] != true {
				t.Fatalf("B answered from %v (cache_hit %v), want l2", fromL2["cache_tier"], fromL2["cache_hit"])
			}
			if !same(first, fromL2) {
				t.Fatalf("B's L2 answer differs from A's decision:\nA: %v\nB: %v", first, fromL2)
			}
			if again := decide(b, requests[name]); again["cache_tier"] != "l1" {
				t.Fatalf("B's second answer from %v, want l1 (promoted)", again["cache_tier"])
			}
		})
	}

	t.Run("flush moves every instance to a new epoch", func(t *testing.T) {
		code, doc, raw := httpDo(t, http.MethodDelete, a.URL+"/v1/cache", clusterAdminToken, nil)
		if code != http.StatusOK || doc["flushed"] != true {
			t.Fatalf("DELETE /v1/cache: %d %s", code, raw)
		}
		m := epochRE.FindStringSubmatch(raw)
		if m == nil {
			t.Fatalf("no epoch in %s", raw)
		}
		epoch := m[1]
		waitFor(t, 10*time.Second, "B adopting the new epoch", func() bool {
			_, _, h := httpDo(t, http.MethodGet, b.URL+"/v1/data/acgs/main/health", "", nil)
			m := epochRE.FindStringSubmatch(h)
			return m != nil && m[1] == epoch
		})
		// B had every request in L1 and the cluster had them under the old
		// epoch: none of it may answer now.
		for name, body := range requests {
			if d := decide(b, body); d["cache_tier"] != "none" {
				t.Errorf("%s: B answered from %v after the flush, want a fresh evaluation", name, d["cache_tier"])
			}
		}
		// The new epoch is shared too: an entry B writes now serves A. A unique
		// input per attempt: a write-behind that did not land (a busy machine
		// can trip the L2 breaker) costs an attempt, not the test.
		var safe map[string]any
		if err := json.Unmarshal(requests["safe"], &safe); err != nil {
			t.Fatal(err)
		}
		var tiers []any
		for attempt := 1; attempt <= 10; attempt++ {
			safe["context"].(map[string]any)["explanation"] = fmt.Sprintf("epoch probe %d", attempt)
			body, _ := json.Marshal(safe)
			before := decisionKeys(t, rc, epoch)
			if d := decide(b, body); d["cache_tier"] != "none" {
				t.Fatalf("B answered a new input from %v", d["cache_tier"])
			}
			for w := 0; w < 40 && decisionKeys(t, rc, epoch) <= before; w++ {
				time.Sleep(50 * time.Millisecond)
			}
			d := decide(a, body)
			if d["cache_tier"] == "l2" {
				return
			}
			tiers = append(tiers, d["cache_tier"])
		}
		_, _, h := httpDo(t, http.MethodGet, b.URL+"/v1/data/acgs/main/health", "", nil)
		t.Fatalf("A never answered B's new-epoch decisions from L2 (tiers %v); B health: %s", tiers, h)
	})
}
