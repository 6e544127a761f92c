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
//
// Each probe carries its name as context.explanation, which the decision's
// read set (and so the cache key) includes but which decides nothing for
// these requests: when a write-behind does not land (a busy machine can trip
// the L2 breaker), a fresh probe is tried instead of the whole test failing;
// ten misses in a row still fail it. (A top-level field the constitution
// does not read would not change the key at all.)
func TestL2SharedOnRedisCluster(t *testing.T) {
	rc := testenv.StartRedisCluster(t, 3)
	redisURL := clusterURL(t, rc)
	mutate := func(c *config.Config) {
		c.Cache.RedisURL = redisURL
		c.Cache.SigningKey = strings.Repeat("cluster-signing-key-", 2)
		c.Cache.L2Timeout = 500 * time.Millisecond // correctness, not latency: a busy test machine must not turn a hit into a miss
		c.AdminTok = []string{clusterAdminToken}
		c.Policy.PartialEval = false // plans are beside the point here, and slow to build under -race
	}
	a := servicetest.Start(t, mutate)
	b := servicetest.Start(t, mutate)
	for _, in := range []*servicetest.Instance{a, b} {
		waitFor(t, 30*time.Second, in.URL+" connected to the cluster", func() bool {
			_, doc, _ := httpDo(t, http.MethodGet, in.URL+"/v1/data/acgs/main/health", "", nil)
			cs, _ := doc["cache_stats"].(map[string]any)
			return cs["l2_healthy"] == true
		})
	}
	requests := map[string]map[string]any{}
	names := []string{"safe", "dangerous", "complex", "data_access", "low_trust"}
	for _, name := range names {
		raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var req map[string]any
		if err := json.Unmarshal(raw, &req); err != nil {
			t.Fatal(err)
		}
		requests[name] = req
	}

	// shareOnce has from decide a probe of req and to answer it, once the
	// entry is in the cluster (or 2s passed); it returns both answers.
	shareOnce := func(t *testing.T, from, to *servicetest.Instance, req map[string]any, probe, epoch string) (first, second map[string]any) {
		t.Helper()
		body := withProbe(req, probe)
		before := decisionKeys(t, rc, epoch)
		first = clusterDecide(t, from, body)
		if first["cache_tier"] != "none" {
			t.Fatalf("first decision of %s on %s from cache tier %v", probe, from.URL, first["cache_tier"])
		}
		for w := 0; w < 40 && decisionKeys(t, rc, epoch) <= before; w++ {
			time.Sleep(50 * time.Millisecond)
		}
		return first, clusterDecide(t, to, body)
	}
	same := func(x, y map[string]any) bool {
		for _, f := range []string{"allow", "compliance_score", "reasons", "policy_revision"} {
			if !jsoneq.Equal(x[f], y[f]) {
				return false
			}
		}
		return true
	}

	for _, name := range names {
		t.Run("shared/"+name, func(t *testing.T) {
			var tiers []any
			for attempt := 1; attempt <= 10; attempt++ {
				probe := fmt.Sprintf("shared-%s-%d", name, attempt)
				first, fromL2 := shareOnce(t, a, b, requests[name], probe, "*")
				if fromL2["cache_tier"] != "l2" {
					tiers = append(tiers, fromL2["cache_tier"])
					continue
				}
				if fromL2["cache_hit"] != true || !same(first, fromL2) {
					t.Fatalf("B's L2 answer differs from A's decision:\nA: %v\nB: %v", first, fromL2)
				}
				req := requests[name]
				body := withProbe(req, probe)
				if again := clusterDecide(t, b, body); again["cache_tier"] != "l1" {
					t.Fatalf("B's second answer from %v, want l1 (promoted)", again["cache_tier"])
				}
				return
			}
			t.Fatalf("B never answered A's decision from L2 (tiers %v)", tiers)
		})
	}

	t.Run("flush moves every instance to a new epoch", func(t *testing.T) {
		// B holds these in L1 and the cluster under the current epoch.
		var held [][]byte
		for _, name := range names {
			req := requests[name]
			body := withProbe(req, "held-"+name)
			clusterDecide(t, b, body)
			if d := clusterDecide(t, b, body); d["cache_tier"] != "l1" {
				t.Fatalf("%s: B's second answer from %v, want l1", name, d["cache_tier"])
			}
			held = append(held, body)
		}
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
		// Neither B's L1 nor the cluster's older entries may answer now.
		for i, body := range held {
			if d := clusterDecide(t, b, body); d["cache_tier"] != "none" {
				t.Errorf("%s: B answered from %v after the flush, want a fresh evaluation", names[i], d["cache_tier"])
			}
		}
		// The new epoch is shared too: an entry B writes now serves A.
		var tiers []any
		for attempt := 1; attempt <= 10; attempt++ {
			_, fromL2 := shareOnce(t, b, a, requests["safe"], fmt.Sprintf("epoch-%d", attempt), epoch)
			if fromL2["cache_tier"] == "l2" {
				return
			}
			tiers = append(tiers, fromL2["cache_tier"])
		}
		_, _, h := httpDo(t, http.MethodGet, b.URL+"/v1/data/acgs/main/health", "", nil)
		t.Fatalf("A never answered B's new-epoch decisions from L2 (tiers %v); B health: %s", tiers, h)
	})
}

// clusterDecide posts an ACGS decision and fails t unless it is answered 200.
func clusterDecide(t *testing.T, in *servicetest.Instance, body []byte) map[string]any {
	t.Helper()
	code, doc, raw := httpDo(t, http.MethodPost, in.URL+"/v1/data/acgs/main/decision", "", body)
	if code != http.StatusOK {
		t.Fatalf("decision on %s: %d %s", in.URL, code, raw)
	}
	return doc
}

// withProbe encodes req with probe as its context.explanation (a field the
// decision's read set includes, so that each probe has a cache key of its
// own; none of these requests' actions needs an explanation, so it decides
// nothing), leaving req unchanged.
func withProbe(req map[string]any, probe string) []byte {
	cp := make(map[string]any, len(req))
	for k, v := range req {
		cp[k] = v
	}
	ctx := map[string]any{}
	if c, ok := req["context"].(map[string]any); ok {
		for k, v := range c {
			ctx[k] = v
		}
	}
	ctx["explanation"] = probe
	cp["context"] = ctx
	body, _ := json.Marshal(cp)
	return body
}
