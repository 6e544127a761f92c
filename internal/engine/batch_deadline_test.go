package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/acgs-lite/acgs/internal/admission"
	"github.com/acgs-lite/acgs/internal/apierror"
	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/testenv"
	"github.com/acgs-lite/acgs/policies"
)

// newSafeInput is an allowed request no cache has seen (its trust level and
// usage count are i's).
func newSafeInput(t *testing.T, i int) map[string]any {
	in := loadRequest(t, "safe")
	ctx := in["context"].(map[string]any)
	agent := ctx["agent"].(map[string]any)
	agent["id"] = fmt.Sprintf("agent-deadline-%d", i)
	agent["trust_level"] = json.Number(fmt.Sprintf("0.%d", 80000+i))
	ctx["current_usage_count"] = json.Number(fmt.Sprint(i % 100))
	return in
}

// TestBatchStopsAskingAfterItsDeadline: once a batch's deadline has passed,
// its workers no longer ask admission for a slot for the items left (each
// would only be refused, and counted in acgs_admission_refused_total
// {reason="deadline"}: 500 refusals for a batch of 500 items of which a
// few were waiting, review); those items are answered overloaded as
// before, each once.
func TestBatchStopsAskingAfterItsDeadline(t *testing.T) {
	for _, cached := range []bool{true, false} {
		t.Run(fmt.Sprintf("cache=%v", cached), func(t *testing.T) {
			var c engine.Cache
			if cached {
				tc, err := cache.New(context.Background(), cache.Config{L1Size: 10000, TTL: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = tc.Close() })
				c = tc
			}
			adm := admission.New(admission.Config{MaxInFlight: 1, MaxWait: 10 * time.Second})
			e, err := engine.New(context.Background(), engine.FSSource{FS: policies.FS, Name: "embedded"}, engine.Options{
				ConstitutionalHash: hash, EvalTimeout: time.Second, Logger: quiet, Admit: adm.Do, Cache: c,
			})
			if err != nil {
				t.Fatal(err)
			}
			release, err := adm.Admit(context.Background()) // the only slot is busy throughout
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			const n = 500
			in := make([]any, n)
			for i := range in {
				in[i] = newSafeInput(t, i)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			_, errs := e.DecideBatch(ctx, "acgs/main/decision", in)
			for i, err := range errs {
				if apierror.CodeOf(err) != apierror.Overloaded {
					t.Fatalf("item %d: %v, want overloaded", i, err)
				}
			}
			// DecideBatch answers at the deadline; its workers end after.
			working := func(g testenv.Goroutine) bool {
				return strings.Contains(g.Stack, "github.com/acgs-lite/acgs/internal/parallel.For")
			}
			for bound := time.Now().Add(30 * time.Second); testenv.Goroutines(working) > 0; time.Sleep(time.Millisecond) {
				if time.Now().After(bound) {
					t.Fatal("the batch's workers did not end within 30s")
				}
			}
			// At most the item each worker was waiting on at the deadline.
			workers := min(runtime.GOMAXPROCS(0), n)
			if st := adm.Stats(); st.Deadline > uint64(workers) || st.Admitted != 1 {
				t.Errorf("admission %+v: %d refused at the deadline, want at most %d (one per worker)", st, st.Deadline, workers)
			}
		})
	}
}
