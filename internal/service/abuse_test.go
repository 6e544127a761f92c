package service_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// abuseRequest reads testdata/requests/<name>.json.
func abuseRequest(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// abusePost sends one decision request and returns the status and the
// decoded document.
func abusePost(tb testing.TB, url string, body []byte) (int, map[string]any) {
	tb.Helper()
	resp, err := http.Post(url+"/v1/data/acgs/main/decision", "application/json", bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &doc); err != nil {
		tb.Fatalf("response is not JSON (%v): %s", err, raw)
	}
	return resp.StatusCode, doc
}

// slowConn opens a connection and starts a request line and a Host header,
// then trickles one header byte every interval until the server hangs up.
// It returns how long the server took to close the connection and what it
// sent first (an error status line, or nothing).
func slowConn(t *testing.T, addr string, interval, limit time.Duration) (time.Duration, string, error) {
	// The clock starts before the dial: the server's header deadline
	// cannot start earlier, while a goroutine descheduled after the dial
	// (CI under -race at load 10) measured 405 ms of a 500 ms deadline.
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /v1/data/acgs/main/decision HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "); err != nil {
		return 0, "", err
	}
	closed := make(chan string, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(limit))
		line, _ := bufio.NewReader(c).ReadString('\n')
		closed <- line
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case line := <-closed:
			return time.Since(start), strings.TrimSpace(line), nil
		case <-tick.C:
			if time.Since(start) > limit {
				return time.Since(start), "", errors.New("the server kept the connection open")
			}
			// Writes may fail once the server has closed; the reader reports it.
			_, _ = c.Write([]byte("a"))
		}
	}
}

// TestSlowlorisHeaders opens connections that trickle header bytes and never
// finish: the server must close each one READ_HEADER_TIMEOUT after it opened
// (a trickle does not extend the deadline), and keep answering other clients
// meanwhile.
func TestSlowlorisHeaders(t *testing.T) {
	const headerTimeout = 500 * time.Millisecond
	in := servicetest.Start(t, func(c *config.Config) {
		c.Server.ReadHeaderTimeout = headerTimeout
		c.Server.ReadTimeout = 5 * time.Second
		c.Policy.PartialEval = false // start fast: plans are not what is tested
	})
	addr := strings.TrimPrefix(in.URL, "http://")
	const conns = 50
	type result struct {
		took  time.Duration
		first string
		err   error
	}
	results := make([]result, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, first, err := slowConn(t, addr, 50*time.Millisecond, 10*time.Second)
			results[i] = result{took, first, err}
		}()
	}
	// While they trickle, an ordinary client is served.
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	code, doc := abusePost(t, in.URL, abuseRequest(t, "safe"))
	if code != 200 || doc["allow"] != true {
		t.Fatalf("ordinary request during the attack: %d %v", code, doc)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("ordinary request took %s during the attack", took)
	}
	wg.Wait()
	var longest time.Duration
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("connection %d: %v", i, r.err)
		}
		if r.took < headerTimeout-50*time.Millisecond {
			t.Errorf("connection %d closed after %s, before READ_HEADER_TIMEOUT", i, r.took)
		}
		// Loose upper bound: the machine is shared and 50 goroutines trickle.
		if r.took > headerTimeout+3*time.Second {
			t.Errorf("connection %d closed after %s (READ_HEADER_TIMEOUT %s)", i, r.took, headerTimeout)
		}
		if r.first != "" && !strings.HasPrefix(r.first, "HTTP/1.1 4") {
			t.Errorf("connection %d got %q", i, r.first)
		}
		longest = max(longest, r.took)
	}
	t.Logf("%d slow-header connections closed after at most %s (READ_HEADER_TIMEOUT %s)", conns, longest, headerTimeout)
}

// TestSlowBody sends complete headers and then trickles the body: the
// request is cut off at READ_TIMEOUT, with a 4xx or a closed connection,
// never a 5xx and never a held connection.
func TestSlowBody(t *testing.T) {
	const readTimeout = time.Second
	in := servicetest.Start(t, func(c *config.Config) {
		c.Server.ReadHeaderTimeout = 500 * time.Millisecond
		c.Server.ReadTimeout = readTimeout
		c.Policy.PartialEval = false
	})
	c, err := net.Dial("tcp", strings.TrimPrefix(in.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "POST /v1/data/acgs/main/decision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		done <- strings.TrimSpace(line)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case line := <-done:
			took := time.Since(start)
			if line != "" && !strings.HasPrefix(line, "HTTP/1.1 4") {
				t.Fatalf("slow body answered %q", line)
			}
			if took > readTimeout+3*time.Second {
				t.Fatalf("slow body cut off after %s (READ_TIMEOUT %s)", took, readTimeout)
			}
			t.Logf("slow body: %q after %s", line, took)
			return
		case <-tick.C:
			_, _ = c.Write([]byte(" "))
		}
	}
}

// l2Keys lists the decision entries in Redis.
func l2Keys(tb testing.TB, r *testenv.Redis) []string {
	tb.Helper()
	out, err := r.Do("KEYS", "acgs:d:*")
	if err != nil {
		tb.Fatalf("KEYS: %v", err)
	}
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// newL2Key waits for the write-behind batcher to store one entry beyond
// known and returns its key.
func newL2Key(tb testing.TB, r *testenv.Redis, known map[string]bool) string {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, k := range l2Keys(tb, r) {
			if !known[k] {
				known[k] = true
				return k
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatal("no new L2 entry was written")
	return ""
}

func l2Instance(tb testing.TB, r *testenv.Redis, key string, previous ...string) *servicetest.Instance {
	return servicetest.Start(tb, func(c *config.Config) {
		c.Cache.RedisURL = r.URL()
		c.Cache.SigningKey = key
		c.Cache.PreviousSigningKeys = previous
		c.Cache.L2Timeout = 500 * time.Millisecond // correctness here, not latency: a loaded machine must not turn a hit into a miss
		c.Policy.PartialEval = false               // every decision is evaluated and cached, none answered by a constant plan
	})
}

func waitL2Healthy(tb testing.TB, in *servicetest.Instance) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if in.Service.Cache.Stats().L2Healthy {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatal("L2 did not become healthy")
}

// TestL2ForgedAndReplayedEntries attacks the shared cache through the real
// service: an allow entry copied under the key of a denied request, and an
// entry forged without the key, are both rejected (and counted); the
// request is evaluated and denied as it should be.
func TestL2ForgedAndReplayedEntries(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "redis-server")
	r := testenv.StartRedis(t)
	key := strings.Repeat("abuse-signing-key-", 2)
	safe, dangerous := abuseRequest(t, "safe"), abuseRequest(t, "dangerous")
	known := map[string]bool{}

	a := l2Instance(t, r, key)
	waitL2Healthy(t, a)
	if _, doc := abusePost(t, a.URL, safe); doc["allow"] != true {
		t.Fatalf("safe: %v", doc)
	}
	safeKey := newL2Key(t, r, known)
	if _, doc := abusePost(t, a.URL, dangerous); doc["allow"] != false {
		t.Fatalf("dangerous: %v", doc)
	}
	dangerKey := newL2Key(t, r, known)

	// Sanity: a second instance answers the safe request from L2.
	b := l2Instance(t, r, key)
	waitL2Healthy(t, b)
	if _, doc := abusePost(t, b.URL, safe); doc["cache_tier"] != "l2" || doc["allow"] != true {
		t.Fatalf("genuine entry not served from L2: %v", doc)
	}

	// Entries planted under the denied request's key: each must be rejected
	// (counted once) and the request answered by evaluation.
	for _, tc := range []struct {
		name       string
		cmd        []string
		wantReturn string
	}{
		{"allow entry replayed under the key of a denied request", []string{"COPY", safeKey, dangerKey, "REPLACE"}, "1"},
		// Version 1, flags "defined", a creation time, an allow, and 32 bytes of would-be MAC.
		{"entry forged without the signing key", []string{"SET", dangerKey, "\x01\x01\x00\x00\x01\x90\x00\x00\x00\x00" + `{"allow":true,"compliance_score":1,"reasons":[]}` + strings.Repeat("\x00", 32)}, "OK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out, err := r.Do(tc.cmd...); err != nil || out != tc.wantReturn {
				t.Fatalf("%v: %q %v", tc.cmd[0], out, err)
			}
			c := l2Instance(t, r, key)
			waitL2Healthy(t, c)
			_, doc := abusePost(t, c.URL, dangerous)
			if doc["allow"] != false || doc["cache_tier"] == "l2" {
				t.Fatalf("planted entry answered: %v", doc)
			}
			if n := c.Service.Cache.Stats().L2Rejected; n != 1 {
				t.Fatalf("L2 rejections = %d, want 1", n)
			}
		})
	}
	t.Run("entry replayed under its own key stays a correct decision", func(t *testing.T) {
		// What HMAC cannot prevent: the same entry put back under the same
		// key (e.g. after a delete) answers the same input of the same
		// revision and epoch, i.e. the decision it was made for.
		dump, err := r.Do("GET", safeKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Do("DEL", safeKey); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Do("COPY", dangerKey, safeKey); err != nil { // something else first
			t.Fatal(err)
		}
		if _, err := r.Do("SET", safeKey, dump); err != nil {
			t.Fatal(err)
		}
		c := l2Instance(t, r, key)
		waitL2Healthy(t, c)
		if _, doc := abusePost(t, c.URL, safe); doc["allow"] != true {
			t.Fatalf("safe after replay under its own key: %v", doc)
		}
	})
}

// TestL2SigningKeyRotation rotates CACHE_SIGNING_KEY through the real
// service: an entry signed with the old key is accepted by an instance that
// lists it in CACHE_SIGNING_KEY_PREVIOUS and rejected once it is removed.
func TestL2SigningKeyRotation(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "redis-server")
	r := testenv.StartRedis(t)
	oldKey, newKey := strings.Repeat("old-signing-key-", 3), strings.Repeat("new-signing-key-", 3)
	safe := abuseRequest(t, "safe")
	known := map[string]bool{}

	a := l2Instance(t, r, oldKey)
	waitL2Healthy(t, a)
	if _, doc := abusePost(t, a.URL, safe); doc["allow"] != true {
		t.Fatalf("safe: %v", doc)
	}
	newL2Key(t, r, known)

	during := l2Instance(t, r, newKey, oldKey)
	waitL2Healthy(t, during)
	if _, doc := abusePost(t, during.URL, safe); doc["cache_tier"] != "l2" || doc["allow"] != true {
		t.Fatalf("old-key entry not accepted during the rotation window: %v", doc)
	}
	if n := during.Service.Cache.Stats().L2Rejected; n != 0 {
		t.Fatalf("rejections during the window: %d", n)
	}

	after := l2Instance(t, r, newKey)
	waitL2Healthy(t, after)
	_, doc := abusePost(t, after.URL, safe)
	if doc["cache_tier"] == "l2" {
		t.Fatalf("old-key entry accepted after the old key was removed: %v", doc)
	}
	if doc["allow"] != true {
		t.Fatalf("safe after rotation: %v", doc)
	}
	if n := after.Service.Cache.Stats().L2Rejected; n != 1 {
		t.Fatalf("L2 rejections after rotation = %d, want 1", n)
	}
}

// TestAdminTokenRotationOverTheWire configures ADMIN_TOKEN as the
// environment does ("old,new") and checks both tokens, a prefix, and the
// 401 challenge on the real listener.
func TestAdminTokenRotationOverTheWire(t *testing.T) {
	const oldTok, newTok = "old-admin-token-0123456789", "new-admin-token-9876543210"
	env := map[string]string{"ADMIN_TOKEN": oldTok + ", " + newTok}
	loader := config.NewLoader(pflag.NewFlagSet("serve", pflag.ContinueOnError), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	cfg, err := loader.Config()
	if err != nil {
		t.Fatal(err)
	}
	in := servicetest.Start(t, func(c *config.Config) { c.AdminTok, c.Policy.PartialEval = cfg.AdminTok, false })
	for _, tc := range []struct {
		auth string
		code int
	}{
		{"Bearer " + oldTok, 200}, {"Bearer " + newTok, 200}, {"Bearer " + newTok[:20], 401},
		{"Bearer " + oldTok + ", " + newTok, 401}, {"", 401},
	} {
		req, _ := http.NewRequest(http.MethodDelete, in.URL+"/v1/cache", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%q: %d, want %d", tc.auth, resp.StatusCode, tc.code)
		}
	}
}

// The embedded constitution is served without its Rego tests: a query of
// the whole tree does not run them (they took about 0.5 s, past the default
// EVAL_TIMEOUT, and answered 500), they are not documents, and
// GET /v1/policies does not list them.
func TestEmbeddedTestsAreNotServed(t *testing.T) {
	// What is checked is what the tree holds, not how fast it is read.
	in := servicetest.Start(t, func(c *config.Config) { c.Policy.EvalTimeout = 30 * time.Second })
	get := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, in.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		raw, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s %s: not JSON (%v): %s", method, path, err, raw)
		}
		return resp.StatusCode, doc
	}
	if code, doc := get("POST", "/v1/data/acgs/main_test", `{"input":{}}`); code != 200 || doc["result"] != nil {
		t.Errorf("data.acgs.main_test: %d %v, want 200 undefined", code, doc)
	}
	code, doc := get("POST", "/v1/data/acgs", `{"input":{}}`)
	res, _ := doc["result"].(map[string]any)
	if code != 200 || res["main"] == nil {
		t.Errorf("data.acgs: %d %v, want 200 with the constitution's documents", code, doc)
	}
	for k := range res {
		if strings.HasSuffix(k, "_test") {
			t.Errorf("data.acgs has %s", k)
		}
	}
	_, doc = get("GET", "/v1/policies", "")
	list, _ := doc["result"].([]any)
	if len(list) == 0 {
		t.Fatalf("GET /v1/policies: %v", doc)
	}
	for _, p := range list {
		id, _ := p.(map[string]any)["id"].(string)
		if strings.HasSuffix(id, "_test.rego") {
			t.Errorf("GET /v1/policies lists %s", id)
		}
	}
}
