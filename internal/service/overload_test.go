package service_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/faults"
	"github.com/acgs-lite/acgs/internal/testenv"
)

// The overload test of issue 18: a real `acgs serve` with its default
// settings, driven on loopback with inputs that are all new (no cache can
// answer them) and all allowed by the constitution. First the saturation
// rate (closed loop), then the unloaded latency (open loop at a quarter of
// it), then open loop at twice the saturation rate for 20 s. Overload must
// be shed honestly: no 200 with a denial, every refusal a 503 overloaded with
// Retry-After, at least 90% of the saturation rate still decided, and the
// admitted requests' p99 at most 5x the unloaded p99.

const (
	overloadSaturationUsers = 8
	// overloadConnections bounds the open loop's connections, as wrk2's
	// do: 256, as in the trial of issue 18. Unbounded (one connection per
	// outstanding request, as vegeta), twice the saturation rate is more
	// front-door work than the CPUs can do (docs/reliability.md).
	overloadConnections = 256
	overloadAttempts    = 3
	// overloadBusyShare: when processes other than the service and this
	// test took more than this share of the machine's CPU during a phase,
	// the phase's throughput says more about them than about the service.
	overloadBusyShare = 0.15
	// overloadQuietWait bounds how long an attempt waits for a quiet
	// second before it starts (other packages' tests run beside this one).
	overloadQuietWait = 30 * time.Second
)

// overloadSeq numbers the inputs: every request of the test is new.
var overloadSeq atomic.Int64

// overloadBody is an allowed constitutional evaluation whose decision-
// relevant numbers are unique to i: the agent's trust level (0.80000 to
// 0.99999, never below the required 0.8) and the usage count (0.00 to
// 99.99, below the data category's rate limit of 100). Numbers with few
// digits, as clients send them: OPA's arithmetic on long decimals is slow
// enough to change what is measured.
func overloadBody(dst []byte, i int64) []byte {
	dst = append(dst, `{"type":"constitutional_evaluation","constitutional_hash":"cdd01ef066bc6cf2","action":"data.read_public",`+
		`"context":{"environment":{"sandbox_enabled":true,"audit_enabled":true},"agent":{"id":"agent-overload","trust_level":0.`...)
	dst = strconv.AppendInt(dst, 80000+(i/10000)%20000, 10)
	dst = append(dst, `,"requested_resources":{"cpu_cores":1}},"current_usage_count":`...)
	dst = strconv.AppendInt(dst, (i%10000)/100, 10)
	dst = append(dst, '.', byte('0'+(i%100)/10), byte('0'+i%10))
	return append(dst, `,"responsible_party":"load_test_user","explanation":"Safe public data access for dashboard"}}`...)
}

// overloadStats is what one phase saw.
type overloadStats struct {
	mu        sync.Mutex
	sent      int
	allowed   int
	denied    int // 200 with "allow": false: must never happen here
	shed      int // 503 overloaded with Retry-After and "allow": false
	badShed   int // 503 without Retry-After, code or allow false
	other     int // anything else: transport errors, other statuses
	examples  []string
	latencies []time.Duration // of allowed requests (open loop: from the scheduled send time)
	late      []time.Duration // open loop: how late each request was sent (the generator's own lag)
	trip      []time.Duration // open loop: each request's round trip from its actual send
	tripOK    []time.Duration // open loop: the same, of allowed requests
	elapsed   time.Duration
	busy      float64 // share of the machine's CPU that other processes took
	srvCPU    float64 // CPU seconds the service used
	genCPU    float64 // CPU seconds this process (the load generator) used
	conns     int     // open loop: connections (workers) the generator needed
}

func (s *overloadStats) example(msg string) {
	if len(s.examples) < 5 {
		s.examples = append(s.examples, msg)
	}
}

func (s *overloadStats) p99() time.Duration { return quantile(s.latencies, 99) }

// quantile is the nearest-rank percentile pct of l (0 when l is empty).
func quantile(l []time.Duration, pct int) time.Duration {
	if len(l) == 0 {
		return 0
	}
	l = slices.Clone(l)
	slices.Sort(l)
	return l[(len(l)*pct)/100]
}

func (s *overloadStats) goodput() float64 { return float64(s.allowed) / s.elapsed.Seconds() }

func (s *overloadStats) String() string {
	var open string
	if len(s.late) > 0 {
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		open = fmt.Sprintf("; %d connections; sent late p50 %s, p99 %s; round trip from the send p50 %s, p99 %s (of allowed requests p50 %s, p99 %s)",
			s.conns, r(quantile(s.late, 50)), r(quantile(s.late, 99)), r(quantile(s.trip, 50)), r(quantile(s.trip, 99)),
			r(quantile(s.tripOK, 50)), r(quantile(s.tripOK, 99)))
	}
	return fmt.Sprintf("%d sent in %.1fs: %d allowed (%.0f/s, p99 %s), %d shed, %d denied, %d bad 503, %d other; CPU: service %.2f, generator %.2f, other processes %.0f%% of the machine",
		s.sent, s.elapsed.Seconds(), s.allowed, s.goodput(), s.p99().Round(10*time.Microsecond), s.shed, s.denied, s.badShed, s.other,
		s.srvCPU/s.elapsed.Seconds(), s.genCPU/s.elapsed.Seconds(), s.busy*100) + open
}

// overloadDriver sends decision requests over keep-alive HTTP/1.1
// connections of its own. It writes each request in one write and reads
// the answer with a minimal parser (status, Content-Length, Retry-After)
// instead of net/http's client, whose per-request goroutine hand-offs cost
// several times more CPU: the generator shares the service's two CPUs, and
// what it spends is taken from the service it measures.
type overloadDriver struct {
	addr   string // host:port
	server int    // pid of the service, for the CPU accounting

	mu   sync.Mutex
	idle []*overloadConn
}

type overloadConn struct {
	c    net.Conn
	r    *bufio.Reader
	buf  []byte
	body []byte
	resp []byte
}

func newOverloadDriver(url string, pid int) *overloadDriver {
	return &overloadDriver{addr: strings.TrimPrefix(url, "http://"), server: pid}
}

func (d *overloadDriver) get() (*overloadConn, error) {
	d.mu.Lock()
	if n := len(d.idle); n > 0 {
		c := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	c, err := net.DialTimeout("tcp", d.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &overloadConn{c: c, r: bufio.NewReaderSize(c, 8192)}, nil
}

func (d *overloadDriver) put(c *overloadConn) {
	d.mu.Lock()
	d.idle = append(d.idle, c)
	d.mu.Unlock()
}

func (d *overloadDriver) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.idle {
		c.c.Close()
	}
	d.idle = nil
}

// answer is what the generator keeps of one answer.
type answer struct {
	status                int
	retryAfter            string
	allow, deny, shedCode bool
	body                  string // kept only when the answer is not an allow
}

// Markers of the answers, found without decoding them: the generator's
// CPU is taken from the service.
var (
	allowTrue  = []byte(`"allow":true`)
	allowFalse = []byte(`"allow":false`)
	codeShed   = []byte(`"code":"overloaded"`)
)

// post sends input i and classifies the answer.
func (d *overloadDriver) post(i int64) (answer, error) {
	c, err := d.get()
	if err != nil {
		return answer{}, err
	}
	c.body = overloadBody(c.body[:0], i)
	body := c.body
	c.buf = append(c.buf[:0], "POST /v1/data/acgs/main/decision HTTP/1.1\r\nHost: "...)
	c.buf = append(c.buf, d.addr...)
	c.buf = append(c.buf, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	c.buf = strconv.AppendInt(c.buf, int64(len(body)), 10)
	c.buf = append(c.buf, "\r\n\r\n"...)
	c.buf = append(c.buf, body...)
	_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
	status, retry, resp, err := c.roundTrip()
	if err != nil {
		c.c.Close()
		return answer{}, err
	}
	a := answer{status: status, retryAfter: retry,
		allow: bytes.Contains(resp, allowTrue), deny: bytes.Contains(resp, allowFalse), shedCode: bytes.Contains(resp, codeShed)}
	if status != http.StatusOK || !a.allow {
		a.body = string(resp)
	}
	d.put(c)
	return a, nil
}

func (c *overloadConn) roundTrip() (int, string, []byte, error) {
	if _, err := c.c.Write(c.buf); err != nil {
		return 0, "", nil, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, "", nil, err
	}
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return 0, "", nil, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, "", nil, fmt.Errorf("bad status line %q", line)
	}
	length, retry := -1, ""
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, "", nil, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, _ := bytes.Cut(h, []byte(":"))
		switch strings.ToLower(string(k)) {
		case "content-length":
			length, _ = strconv.Atoi(strings.TrimSpace(string(v)))
		case "retry-after":
			retry = strings.TrimSpace(string(v))
		case "transfer-encoding":
			return 0, "", nil, fmt.Errorf("unexpected Transfer-Encoding %s", v)
		}
	}
	if length < 0 {
		return 0, "", nil, errors.New("answer without Content-Length")
	}
	if cap(c.resp) < length {
		c.resp = make([]byte, length)
	}
	body := c.resp[:length]
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, "", nil, err
	}
	return status, retry, body, nil
}

// one sends input i and records the answer; lat is measured from from,
// and with open set (open loop: from is the scheduled time) how late the
// request was sent and its round trip from the send are kept too.
func (d *overloadDriver) one(s *overloadStats, i int64, from time.Time, open bool) {
	sent := time.Now()
	a, err := d.post(i)
	now := time.Now()
	lat := now.Sub(from)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	if open {
		s.late = append(s.late, sent.Sub(from))
		s.trip = append(s.trip, now.Sub(sent))
	}
	switch {
	case err != nil:
		s.other++
		s.example(err.Error())
	case a.status == http.StatusOK && a.allow && !a.deny:
		s.allowed++
		s.latencies = append(s.latencies, lat)
		if open {
			s.tripOK = append(s.tripOK, now.Sub(sent))
		}
	case a.status == http.StatusOK && a.deny:
		s.denied++
		s.example(fmt.Sprintf("200 denial: %.300s", a.body))
	case a.status == http.StatusServiceUnavailable && a.retryAfter != "" && a.shedCode && a.deny && !a.allow:
		s.shed++
	case a.status == http.StatusServiceUnavailable:
		s.badShed++
		s.example(fmt.Sprintf("503 (Retry-After %q): %.200s", a.retryAfter, a.body))
	default:
		s.other++
		s.example(fmt.Sprintf("HTTP %d: %.200s", a.status, a.body))
	}
}

// closed runs users sending back to back for dur.
func (d *overloadDriver) closed(users int, dur time.Duration) *overloadStats {
	s := &overloadStats{}
	cpu := d.cpuStart()
	start := time.Now()
	end := start.Add(dur)
	var wg sync.WaitGroup
	for range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				d.one(s, overloadSeq.Add(1), time.Now(), false)
			}
		}()
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	s.busy, s.srvCPU, s.genCPU = cpu()
	return s
}

// open sends at rate for dur whatever the answers: a request is handed at
// its scheduled time to an idle worker, and a new worker (with a connection
// of its own) is started when none is idle, up to maxConns. A fixed set of
// workers would be a closed loop in disguise: once every one waits for an
// answer, the rate offered falls to workers / round trip (at twice the
// saturation rate with 128 workers it offered 1.4x). Latency is measured
// from each request's scheduled send time, so that a generator that falls
// behind shows it as latency.
func (d *overloadDriver) open(rate float64, dur time.Duration, maxConns int) *overloadStats {
	s := &overloadStats{}
	total := int64(rate * dur.Seconds())
	interval := float64(time.Second) / rate
	cpu := d.cpuStart()
	start := time.Now().Add(5 * time.Millisecond)
	work := make(chan time.Time) // each request's scheduled send time
	var wg sync.WaitGroup
	worker := func(sched time.Time) {
		defer wg.Done()
		for ok := true; ok; sched, ok = <-work {
			d.one(s, overloadSeq.Add(1), sched, true)
		}
	}
	workers := 0
	for n := range total {
		sched := start.Add(time.Duration(float64(n) * interval))
		if w := time.Until(sched); w > 0 {
			time.Sleep(w)
		}
		select {
		case work <- sched:
			continue
		default:
		}
		if workers < maxConns {
			workers++
			wg.Add(1)
			go worker(sched)
			continue
		}
		work <- sched // every worker busy and no more allowed: the lag shows as latency
	}
	close(work)
	wg.Wait()
	// The window is the planned one unless the answers took longer: a
	// goodput over a stretched window would be flattered.
	s.elapsed = max(time.Since(start), dur)
	s.busy, s.srvCPU, s.genCPU = cpu()
	s.conns = workers
	return s
}

// cpuStart starts measuring CPU time; the returned function gives the
// share of the machine's CPU that processes other than this one and the
// service took since, and the CPU seconds of the service and of this
// process. On a system without /proc it reports zeros.
func (d *overloadDriver) cpuStart() func() (others, service, generator float64) {
	total0, ok0 := machineBusyTicks()
	self0, _ := procTicks("self")
	srv0, _ := procTicks(strconv.Itoa(d.server))
	t0 := time.Now()
	return func() (float64, float64, float64) {
		total1, ok1 := machineBusyTicks()
		self1, _ := procTicks("self")
		srv1, _ := procTicks(strconv.Itoa(d.server))
		if !ok0 || !ok1 {
			return 0, 0, 0
		}
		o := float64((total1 - total0) - (self1 - self0) - (srv1 - srv0))
		capacity := time.Since(t0).Seconds() * 100 * float64(cpus())
		return max(0, o/capacity), float64(srv1-srv0) / 100, float64(self1-self0) / 100
	}
}

// waitQuiet waits, up to max, for a second in which other processes take
// less than overloadBusyShare of the CPUs; it reports whether it found one.
func (d *overloadDriver) waitQuiet(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		cpu := d.cpuStart()
		time.Sleep(time.Second)
		if others, _, _ := cpu(); others < overloadBusyShare {
			return true
		}
	}
	return false
}

// machineBusyTicks is the non-idle CPU time of the machine in clock ticks
// (USER_HZ, 100 on Linux) from /proc/stat.
func machineBusyTicks() (int64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return busy, true
}

// procTicks is the user+system CPU time of a process (pid or "self") in
// clock ticks.
func procTicks(pid string) (int64, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	_, rest, ok := strings.Cut(string(b), ") ") // the command may hold spaces
	if !ok {
		return 0, false
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, true
}

func cpus() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 1
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}

// checkHonest fails the test for anything but allowed decisions and honest
// sheds: a 200 denial under load is exactly what admission control exists
// to prevent.
func checkHonest(t *testing.T, phase string, s *overloadStats) {
	t.Helper()
	if s.denied > 0 || s.badShed > 0 || s.other > 0 {
		t.Errorf("%s: %s; examples: %q", phase, s, s.examples)
	}
}

func TestOverloadShedsHonestly(t *testing.T) {
	if testing.Short() {
		t.Skip("about a minute of load on both CPUs: runs in the full-size suite (the first go test of scripts/test.sh)")
	}
	if raceDetector {
		t.Skip("under the race detector this process's load generator runs several times slower and would measure itself, " +
			"not the service; scripts/test.sh runs this test in its full-size run, without the race detector")
	}
	// Default settings but EVAL_TIMEOUT, as in the fault scenarios
	// (docs/reliability.md): on a shared 2-CPU machine the CPU other
	// processes take can alone push one evaluation past the default 100 ms,
	// and the fail-closed denial that follows would be their doing. Load
	// itself cannot: admission control bounds the evaluations that share
	// the CPUs. (Without it, this load queues evaluations for seconds.)
	//
	// For comparisons (docs/reliability.md): ACGS_OVERLOAD_ENV adds
	// settings of the service (e.g. "ADMISSION_MAX_QUEUE=16 GOGC=200"), and
	// ACGS_OVERLOAD_RATE replaces the measured saturation rate by a given
	// one, so that two builds are driven at the same rates;
	// ACGS_OVERLOAD_CONNS replaces overloadConnections.
	env := append([]string{"LOG_LEVEL=warn", "EVAL_TIMEOUT=1s"}, strings.Fields(os.Getenv("ACGS_OVERLOAD_ENV"))...)
	srv := faults.StartACGS(t, testenv.ACGSBinary(t), t.TempDir(), "acgs", env...)
	d := newOverloadDriver(srv.URL, srv.Pid())
	defer d.close()
	conns := overloadConnections
	if v := os.Getenv("ACGS_OVERLOAD_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("ACGS_OVERLOAD_CONNS=%q: want a number of connections", v)
		}
		conns = n
	}

	// Warm-up: connections, the plan of the input's type and
	// action, the garbage collector's pacing.
	checkHonest(t, "warm-up", d.closed(overloadSaturationUsers, 2*time.Second))

	for attempt := 1; attempt <= overloadAttempts && !t.Failed(); attempt++ {
		if !d.waitQuiet(overloadQuietWait) {
			t.Logf("attempt %d: other processes kept more than %.0f%% of the CPUs busy for %s; measuring anyway", attempt, 100*overloadBusyShare, overloadQuietWait)
		}
		sat := d.closed(overloadSaturationUsers, 3*time.Second)
		checkHonest(t, "saturation", sat)
		rate := sat.goodput()
		if fixed := os.Getenv("ACGS_OVERLOAD_RATE"); fixed != "" {
			r, err := strconv.ParseFloat(fixed, 64)
			if err != nil || r <= 0 {
				t.Fatalf("ACGS_OVERLOAD_RATE=%q: want a rate per second", fixed)
			}
			rate = r
		}
		unloaded := d.open(rate/4, 3*time.Second, conns)
		checkHonest(t, "unloaded", unloaded)
		over := d.open(2*rate, 20*time.Second, conns)
		checkHonest(t, "overload", over)
		loadavg, _ := os.ReadFile("/proc/loadavg")
		t.Logf("attempt %d (load average %s):\n  saturation, closed loop, %d users: %s\n  unloaded, open loop at %.0f/s: %s\n  overload, open loop at %.0f/s: %s",
			attempt, strings.TrimSpace(string(loadavg)), overloadSaturationUsers, sat, rate/4, unloaded, 2*rate, over)
		if over.shed == 0 {
			// On a quiet machine twice the saturation rate must overload
			// the service; a saturation rate measured while neighbours
			// took the CPUs may be too low to. Nothing was tested: again.
			t.Logf("attempt %d: nothing was shed at twice the saturation rate: the service was not overloaded", attempt)
			continue
		}
		// Goodput and latency under overload are targets of issue 18 and
		// docs/reliability.md, reported here and not asserted (speed is
		// measured, not asserted in unit tests); what is asserted is that
		// every response was honest: no 200 denial, every refusal a 503
		// with Retry-After (checkHonest above).
		g, p, u := over.goodput(), over.p99(), unloaded.p99()
		verdict := func(ok bool) string {
			if ok {
				return "met"
			}
			return "NOT met"
		}
		t.Logf("attempt %d: goodput %.0f/s is %.0f%% of the saturation rate %.0f/s (goal at least 90%%: %s); p99 of admitted requests %s is %.1fx the unloaded p99 %s (goal at most 5x: %s); CPU taken by other processes up to %.0f%%",
			attempt, g, 100*g/rate, rate, verdict(g >= 0.9*rate), p, float64(p)/float64(u), u, verdict(p <= 5*u), 100*max(sat.busy, unloaded.busy, over.busy))
		if offered := float64(over.sent) / over.elapsed.Seconds(); offered < 1.9*rate {
			// The generator shares the CPUs with the service: when it
			// cannot keep to its schedule, the load was less than twice
			// the saturation rate and the p99 from the schedule is mostly
			// its own lag (sent late, above); the round trip from the
			// send is the service's part.
			o, u := quantile(over.tripOK, 99), quantile(unloaded.tripOK, 99)
			t.Logf("attempt %d: the generator fell behind: it offered %.0f/s, %.2fx the saturation rate, not 2x; from the send, the p99 of admitted requests %s is %.1fx the unloaded one %s",
				attempt, offered, offered/rate, o, float64(o)/float64(u), u)
		}
		return
	}
	if !t.Failed() {
		t.Skipf("every response was honest in %d attempts, but the service was never overloaded (a saturation rate measured while other processes held the CPUs can be too low)", overloadAttempts)
	}
}
