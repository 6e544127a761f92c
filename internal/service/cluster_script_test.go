package service_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/faults"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// The fleet of scripts/cluster.sh, driven end to end: real nginx, Redis (or a
// Redis Cluster), Prometheus, three acgs processes and the bundle server, all
// on loopback, with traffic only to 127.0.0.1 and every wait bounded.

const pollMax = faults.PollMax

// fleet is one scripts/cluster.sh run (faults.Fleet) with this file's checks.
type fleet struct{ *faults.Fleet }

// startFleet builds acgs, runs `cluster.sh up` (with extra args) and
// registers `down` for the end of the test.
func startFleet(t *testing.T, upArgs ...string) *fleet {
	t.Helper()
	acgs := testenv.ACGSBinary(t)
	return &fleet{faults.StartFleet(t, acgs, upArgs...)}
}

// publish runs `cluster.sh publish` and returns when the new archive was
// put in place (its modification time, taken just before the rename).
func (f *fleet) publish(t *testing.T, args ...string) time.Time {
	t.Helper()
	if out, err := f.Script(2*time.Minute, append([]string{"publish"}, args...)...); err != nil {
		t.Fatalf("cluster.sh publish %v: %v\n%s", args, err, out)
	}
	st, err := os.Stat(filepath.Join(f.Dir, "bundles", "bundle.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return st.ModTime()
}

// health returns an instance's ACGS health document.
func (f *fleet) health(t *testing.T, i int) map[string]any {
	t.Helper()
	_, doc, _ := httpDo(t, http.MethodGet, f.InstanceURL(i)+"/v1/data/acgs/main/health", "", nil)
	return doc
}

// logTime returns when instance i logged msg for revision, zero if not yet.
func (f *fleet) logTime(i int, msg, revision string) time.Time {
	file, err := os.Open(filepath.Join(f.Dir, "logs", fmt.Sprintf("acgs-%d.log", i)))
	if err != nil {
		return time.Time{}
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Time     time.Time `json:"time"`
			Msg      string    `json:"msg"`
			Revision string    `json:"revision"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == msg && line.Revision == revision {
			return line.Time
		}
	}
	return time.Time{}
}

// observation is one request of the background load.
type observation struct {
	target   string // "nginx" or "acgs-N"
	start    time.Time
	end      time.Time
	code     int
	revision string
	body     string // kept when no revision came back
	err      error
}

// load sends decisions in the background to each target (one sequential
// worker per target, nginx two), paced, until stopped or bounded.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	obs  []observation
}

func startLoad(t *testing.T, targets map[string]string, bodies [][]byte) *load {
	l := &load{stop: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for name, url := range targets {
		workers := 1
		if name == "nginx" {
			workers = 2
		}
		for w := range workers {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for n := 0; n < 3000; n++ { // bound: 3000 × ≥20ms ≥ 60s
					select {
					case <-l.stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					o := observation{target: name, start: time.Now()}
					resp, err := client.Post(url+"/v1/data/acgs/main/decision", "application/json", bytes.NewReader(bodies[(n+w)%len(bodies)]))
					if err != nil {
						o.err = err
					} else {
						var doc struct {
							Revision string `json:"policy_revision"`
						}
						raw, rerr := io.ReadAll(resp.Body)
						resp.Body.Close()
						o.code, o.err = resp.StatusCode, rerr
						if o.err == nil {
							o.err = json.Unmarshal(raw, &doc)
						}
						if o.revision = doc.Revision; o.revision == "" {
							o.body = string(raw)
						}
					}
					o.end = time.Now()
					l.mu.Lock()
					l.obs = append(l.obs, o)
					l.mu.Unlock()
				}
			}()
		}
	}
	return l
}

// halt stops the load and returns every observation, in start order per target.
func (l *load) halt() []observation {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.obs
}

// failures returns the requests that did not succeed or carry a revision
// outside allowed.
func failures(obs []observation, allowed ...string) []string {
	var bad []string
	for _, o := range obs {
		ok := o.err == nil && o.code == http.StatusOK
		if ok && len(allowed) > 0 {
			ok = false
			for _, a := range allowed {
				ok = ok || o.revision == a
			}
		}
		if !ok {
			bad = append(bad, fmt.Sprintf("%s at %s: code %d revision %q err %v %s", o.target, o.start.Format("15:04:05.000"), o.code, o.revision, o.err, o.body))
		}
	}
	return bad
}

func requestBodies(t *testing.T) [][]byte {
	t.Helper()
	var bodies [][]byte
	for _, name := range []string{"safe", "dangerous", "complex", "data_access", "low_trust"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	return bodies
}

// probeL2 checks that an instance answers from L2 a decision another made:
// a unique input is decided by instance 1, then asked of instance 2. A
// write-behind slower than the pause only costs another attempt.
func probeL2(t *testing.T, f *fleet) {
	t.Helper()
	var safe map[string]any
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", "safe.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &safe); err != nil {
		t.Fatal(err)
	}
	var tiers []any
	for attempt := 1; attempt <= 10; attempt++ {
		safe["context"].(map[string]any)["explanation"] = fmt.Sprintf("l2 probe %d %d", time.Now().UnixNano(), attempt)
		body, _ := json.Marshal(safe)
		code, first, raw := httpDo(t, http.MethodPost, f.InstanceURL(1)+"/v1/data/acgs/main/decision", "", body)
		if code != http.StatusOK || first["cache_tier"] != "none" {
			t.Fatalf("instance 1: %d %s", code, raw)
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		_, second, _ := httpDo(t, http.MethodPost, f.InstanceURL(2)+"/v1/data/acgs/main/decision", "", body)
		if second["cache_tier"] == "l2" {
			if second["allow"] != first["allow"] || second["policy_revision"] != first["policy_revision"] {
				t.Fatalf("L2 answer %v differs from the decision %v", second, first)
			}
			return
		}
		tiers = append(tiers, second["cache_tier"])
	}
	t.Fatalf("instance 2 never answered instance 1's decision from L2 (tiers %v)", tiers)
}

// TestClusterScript drives scripts/cluster.sh: the fleet comes up healthy,
// load through nginx succeeds, instances share decisions through L2,
// Prometheus scrapes all three, a new signed revision reaches every instance
// within two polling intervals with no failed request and no old decision
// after activation, and bundles with a bad signature or the wrong
// constitutional hash are refused everywhere while the last good one serves.
func TestClusterScript(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole fleet (about a minute)")
	}
	f := startFleet(t)
	bodies := requestBodies(t)

	t.Run("status", func(t *testing.T) {
		out, err := f.Script(time.Minute, "status")
		if err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		if n := strings.Count(out, "revision=cluster-initial"); n != 4 { // 3 instances + the bundle server
			t.Fatalf("status shows cluster-initial %d times, want 4:\n%s", n, out)
		}
	})

	t.Run("load through nginx", func(t *testing.T) {
		l := startLoad(t, map[string]string{"nginx": f.NginxURL()}, bodies)
		time.Sleep(3 * time.Second)
		obs := l.halt()
		if len(obs) < 50 {
			t.Fatalf("only %d requests in 3s", len(obs))
		}
		if bad := failures(obs, "cluster-initial"); len(bad) > 0 {
			t.Fatalf("%d of %d requests failed, e.g. %s", len(bad), len(obs), bad[0])
		}
		t.Logf("%d requests through nginx, all answered by cluster-initial", len(obs))
	})

	t.Run("L2 shared between instances", func(t *testing.T) { probeL2(t, f) })

	t.Run("Prometheus scrapes all three", func(t *testing.T) {
		var last string
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			_, _, raw := httpDo(t, http.MethodGet, f.PromURL()+"/api/v1/targets?state=active", "", nil)
			var doc struct {
				Data struct {
					ActiveTargets []struct {
						ScrapePool string `json:"scrapePool"`
						ScrapeURL  string `json:"scrapeUrl"`
						Health     string `json:"health"`
					} `json:"activeTargets"`
				} `json:"data"`
			}
			_ = json.Unmarshal([]byte(raw), &doc)
			up := 0
			for _, tg := range doc.Data.ActiveTargets {
				if tg.ScrapePool == "acgs" && tg.Health == "up" {
					up++
				}
			}
			if up == 3 {
				return
			}
			last = raw
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("Prometheus does not report 3 acgs targets up after 30s: %s", last)
	})

	targets := map[string]string{"nginx": f.NginxURL()}
	for i := 1; i <= 3; i++ {
		targets[fmt.Sprintf("acgs-%d", i)] = f.InstanceURL(i)
	}

	t.Run("new signed revision everywhere", func(t *testing.T) {
		l := startLoad(t, targets, bodies)
		published := f.publish(t, "--revision", "r2")
		activeAt := map[int]time.Time{}
		deadline := time.Now().Add(60 * time.Second)
		for len(activeAt) < 3 && time.Now().Before(deadline) {
			for i := 1; i <= 3; i++ {
				if _, done := activeAt[i]; !done && f.health(t, i)["policy_revision"] == "r2" {
					activeAt[i] = time.Now()
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second) // traffic after the activation, too
		obs := l.halt()
		if len(activeAt) < 3 {
			t.Log(f.Logs())
			t.Fatalf("only %d instances active on r2 after 60s", len(activeAt))
		}
		if bad := failures(obs, "cluster-initial", "r2"); len(bad) > 0 {
			t.Fatalf("%d of %d requests failed during the activation, e.g. %s", len(bad), len(obs), bad[0])
		}
		// Two polling intervals for the instances to fetch and verify it (plus
		// a second for the download itself on a busy machine); activating it
		// (compiling, building the partial-evaluation plans) comes on top and
		// is reported.
		pickupBound := 2*pollMax*time.Second + time.Second
		var allActive time.Time
		for i := 1; i <= 3; i++ {
			picked := f.logTime(i, "remote bundle downloaded and verified", "r2")
			activated := f.logTime(i, "policy bundle activated", "r2")
			if picked.IsZero() || activated.IsZero() {
				t.Fatalf("acgs-%d logged no download/activation of r2", i)
			}
			t.Logf("acgs-%d: verified %s after publication, activated %s later",
				i, picked.Sub(published).Round(time.Millisecond), activated.Sub(picked).Round(time.Millisecond))
			if d := picked.Sub(published); d > pickupBound {
				t.Errorf("acgs-%d fetched r2 %s after publication, more than two polling intervals (%s)", i, d, pickupBound)
			}
			if activated.After(allActive) {
				allActive = activated
			}
		}
		// No old decision once served new: per instance, in request order;
		// through nginx, for requests sent after all three had switched.
		firstNew := map[string]time.Time{}
		for _, o := range obs {
			if o.revision == "r2" && (firstNew[o.target].IsZero() || o.end.Before(firstNew[o.target])) {
				firstNew[o.target] = o.end
			}
		}
		n := 0
		for _, o := range obs {
			if o.revision != "cluster-initial" {
				continue
			}
			if o.target != "nginx" && !firstNew[o.target].IsZero() && o.start.After(firstNew[o.target]) {
				t.Errorf("%s answered cluster-initial at %s after answering r2 at %s", o.target, o.start.Format("15:04:05.000"), firstNew[o.target].Format("15:04:05.000"))
			}
			if o.target == "nginx" && o.start.After(allActive) {
				t.Errorf("nginx answered cluster-initial for a request sent at %s, after every instance activated r2 (%s)", o.start.Format("15:04:05.000"), allActive.Format("15:04:05.000"))
			}
			n++
		}
		t.Logf("%d requests during the rollout (%d answered by the old revision before the switch), none failed", len(obs), n)
	})

	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"bad signature refused", []string{"--revision", "r3-bad-signature", "--bad-signature"}, "verification error"},
		{"wrong constitutional hash refused", []string{"--revision", "r4-wrong-hash", "--constitutional-hash", "0123456789abcdef"}, "constitutional hash 0123456789abcdef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failuresBefore := make([]float64, 4)
			for i := 1; i <= 3; i++ {
				failuresBefore[i] = reloadFailures(t, f.InstanceURL(i))
			}
			l := startLoad(t, targets, bodies)
			f.publish(t, tc.args...)
			for i := 1; i <= 3; i++ {
				waitFor(t, 30*time.Second, fmt.Sprintf("acgs-%d reporting %q", i, tc.wantErr), func() bool {
					msg, _ := f.health(t, i)["last_reload_error"].(string)
					return strings.Contains(msg, tc.wantErr)
				})
			}
			time.Sleep(2 * pollMax * time.Second) // two more polling intervals: still refused
			obs := l.halt()
			for i := 1; i <= 3; i++ {
				if rev := f.health(t, i)["policy_revision"]; rev != "r2" {
					t.Errorf("acgs-%d serves %v, want r2 still", i, rev)
				}
				if got := reloadFailures(t, f.InstanceURL(i)); got <= failuresBefore[i] {
					t.Errorf("acgs-%d: reload failures %v, not more than before (%v)", i, got, failuresBefore[i])
				}
			}
			if bad := failures(obs, "r2"); len(bad) > 0 {
				t.Fatalf("%d of %d requests failed or were not answered by r2, e.g. %s", len(bad), len(obs), bad[0])
			}
		})
	}

	t.Run("down stops everything", func(t *testing.T) {
		if out, err := f.Script(2*time.Minute, "down"); err != nil {
			t.Fatalf("down: %v\n%s", err, out)
		}
		for _, off := range []int{0, 1, 2, 3, 79, 80, 90} {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(f.Base+off), time.Second); err == nil {
				c.Close()
				t.Errorf("port %d still open after down", f.Base+off)
			}
		}
		if out, err := f.Script(time.Minute, "status"); err == nil {
			t.Errorf("status exits 0 after down:\n%s", out)
		}
	})
}

// TestClusterScriptRedisCluster brings the fleet up on a 3-master Redis
// Cluster (up --cluster): healthy, and instances share decisions through it.
func TestClusterScriptRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole fleet")
	}
	f := startFleet(t, "--cluster")
	out, err := f.Script(time.Minute, "status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"redis-1      ready", "redis-2      ready", "redis-3      ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	probeL2(t, f)
	l := startLoad(t, map[string]string{"nginx": f.NginxURL()}, requestBodies(t))
	time.Sleep(2 * time.Second)
	if bad := failures(l.halt(), "cluster-initial"); len(bad) > 0 {
		t.Fatalf("%d requests failed, e.g. %s", len(bad), bad[0])
	}
}
