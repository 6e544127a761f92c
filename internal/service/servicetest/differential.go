package servicetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
)

// Failures collects, from concurrent checks, the first few failures of a
// differential test: thousands of inputs should not mean thousands of lines.
type Failures struct {
	mu   sync.Mutex
	msgs []string
	n    int
}

// maxFailures is how many failures are kept for the report.
const maxFailures = 10

// Add records one failure.
func (f *Failures) Add(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if len(f.msgs) < maxFailures {
		f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
	}
}

// Report fails tb with the kept failures and the total count.
func (f *Failures) Report(tb testing.TB) {
	tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.msgs {
		tb.Error(m)
	}
	if f.n > len(f.msgs) {
		tb.Errorf("... and %d more failures", f.n-len(f.msgs))
	}
}

// Each runs check on every item on workers goroutines and waits for all:
// differential tests against a server are bound by round trips, not CPU.
func Each[T any](items []T, workers int, check func(T)) {
	work := make(chan T)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				check(it)
			}
		}()
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
}

// Post sends body as JSON to url and decodes the JSON answer with numbers
// as json.Number, as every decision in this project is compared.
func Post(client *http.Client, url string, body any) (int, map[string]any, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("decoding response: %w", err)
	}
	return resp.StatusCode, out, nil
}
