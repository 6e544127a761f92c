package service_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/config"
	"github.com/acgs-lite/acgs/internal/loadgen"
	"github.com/acgs-lite/acgs/internal/service/servicetest"
)

const batchItems = 100

// mixedInputs are distinct ACGS request bodies drawn from the acgs-mixed
// workload in its weights; a non-empty suffix makes every varied field
// unique (inputs no cache has seen).
type mixedInputs struct {
	w     *loadgen.Workload
	picks []int   // scenario of input i
	idx   []int64 // key index of input i within its scenario
}

func newMixedInputs(b *testing.B, n int) *mixedInputs {
	w, err := loadgen.DefaultWorkload()
	if err != nil {
		b.Fatal(err)
	}
	m := &mixedInputs{w: w}
	r := rand.New(rand.NewPCG(7, 7))
	next := make([]int64, len(w.Scenarios))
	seen := map[string]bool{}
	for len(m.picks) < n {
		s := w.Pick(r)
		body := string(w.Scenarios[s].AppendBody(nil, next[s], ""))
		if seen[body] {
			b.Fatalf("scenario %s repeats a body at index %d", w.Scenarios[s].Name, next[s])
		}
		seen[body] = true
		m.picks = append(m.picks, s)
		m.idx = append(m.idx, next[s])
		next[s]++
	}
	return m
}

func (m *mixedInputs) appendBody(dst []byte, i int, suffix string) []byte {
	return m.w.Scenarios[m.picks[i]].AppendBody(dst, m.idx[i], suffix)
}

// appendBatch appends {"inputs": {"0": <body 0>, ...}} for all inputs.
func (m *mixedInputs) appendBatch(dst []byte, suffix string) []byte {
	dst = append(dst, `{"inputs":{`...)
	for i := range m.picks {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = strconv.AppendInt(dst, int64(i), 10)
		dst = append(dst, `":`...)
		dst = m.appendBody(dst, i, suffix)
	}
	return append(dst, `}}`...)
}

// processCPU is the user and system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func postOK(client *http.Client, url string, body []byte) error {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("POST %s: status %d", url, resp.StatusCode)
	}
	return err
}

// BenchmarkHTTPBatchVsSingle measures decisions/s over loopback HTTP with
// several concurrent keep-alive clients: one decision per
// POST /v1/data/acgs/main/decision (ACGS dialect, as the workload sends it)
// against POST /v1/batch/data/acgs/main/decision with 100 inputs per request
// (performance.md: target ≥ 5×). "warm" repeats 100 distinct acgs-mixed
// inputs already in the cache; "cold" makes every input unique (no cache
// help, plans still apply). The parent logs the ratios; nothing is asserted.
//
//	go test ./internal/service -run '^$' -bench HTTPBatch -benchtime 3s
func BenchmarkHTTPBatchVsSingle(b *testing.B) {
	acgs := servicetest.Start(b, func(c *config.Config) {
		c.Policy.EvalTimeout = 10 * time.Second
		c.Cache.L1Size = 100000 // cold runs must not evict the warm set mid-run
	})
	in := newMixedInputs(b, batchItems)
	single := acgs.URL + "/v1/data/acgs/main/decision"
	batch := acgs.URL + "/v1/batch/data/acgs/main/decision"
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, DisableCompression: true}}
	b.Cleanup(client.CloseIdleConnections)
	// Warm the cache and check that every input answers.
	if err := postOK(client, batch, in.appendBatch(nil, "")); err != nil {
		b.Fatal(err)
	}
	for i := range batchItems {
		if err := postOK(client, single, in.appendBody(nil, i, "")); err != nil {
			b.Fatal(err)
		}
	}

	var nonce atomic.Int64
	rates := map[string]float64{}
	run := func(name string, perOp int, body func(buf []byte, cold bool, op int64) []byte, url string, cold bool) {
		b.Run(name, func(b *testing.B) {
			var ops atomic.Int64
			b.SetParallelism(4) // 4 clients per GOMAXPROCS
			cpu0 := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var buf []byte
				for pb.Next() {
					op := ops.Add(1)
					buf = body(buf[:0], cold, op)
					if err := postOK(client, url, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
			cpu := processCPU() - cpu0
			rate := float64(b.N*perOp) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "decisions/s")
			// CPU (client and server: both are in this process) per decision:
			// steadier than wall time on a shared machine.
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*perOp), "cpu-ns/decision")
			rates[name] = rate // the last (longest) run of each sub-benchmark
		})
	}
	singleBody := func(buf []byte, cold bool, op int64) []byte {
		suffix := ""
		if cold {
			suffix = "-c" + strconv.FormatInt(nonce.Add(1), 36)
		}
		return in.appendBody(buf, int(op%batchItems), suffix)
	}
	batchBody := func(buf []byte, cold bool, _ int64) []byte {
		suffix := ""
		if cold {
			suffix = "-c" + strconv.FormatInt(nonce.Add(1), 36)
		}
		return in.appendBatch(buf, suffix)
	}
	run("warm/single", 1, singleBody, single, false)
	run("warm/batch100", batchItems, batchBody, batch, false)
	run("cold/single", 1, singleBody, single, true)
	run("cold/batch100", batchItems, batchBody, batch, true)
	for _, mode := range []string{"warm", "cold"} {
		if s, bt := rates[mode+"/single"], rates[mode+"/batch100"]; s > 0 && bt > 0 {
			b.Logf("%s: single %.0f decisions/s, batch100 %.0f decisions/s, ratio %.1f×", mode, s, bt, bt/s)
		}
	}
	b.Logf("target (performance.md): warm batch100 ≥ 5× single; cold is evaluation-bound, batching saves only HTTP")
}
