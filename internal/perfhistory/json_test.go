package perfhistory

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// NaN and ±Inf have no JSON number: compare --json and trend --json must
// write null for them instead of failing (and losing the exit code).
func TestJSONNonFiniteIsNull(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, cur string
		want     map[string]string // "name unit" -> fields that must be null
	}{
		{"new metric: no p, no change, no old median", "BenchmarkA 1 5 ns/op\n", "BenchmarkA 1 5 ns/op\nBenchmarkNew 1 7 ns/op\n",
			map[string]string{"New sec/op": "p,change_pct,old_median"}},
		{"missing metric", "BenchmarkA 1 5 ns/op\nBenchmarkGone 1 7 ns/op\n", "BenchmarkA 1 5 ns/op\n",
			map[string]string{"Gone sec/op": "p,change_pct,new_median"}},
		{"zero median before: infinite change", strings.Repeat("BenchmarkZ 1 5 ns/op 0 allocs/op\n", 6), strings.Repeat("BenchmarkZ 1 5 ns/op 2 allocs/op\n", 6),
			map[string]string{"Z allocs/op": "change_pct"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Compare(mustSet(t, []byte(tc.old)), mustSet(t, []byte(tc.cur)), DefaultCompareOptions())
			c.Baseline = &RecordMeta{Name: "b.txt", Commit: "b"}
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatalf("json: %v", err)
			}
			var back struct {
				Deltas []map[string]any `json:"deltas"`
			}
			if err := json.Unmarshal(b, &back); err != nil || len(back.Deltas) != len(c.Deltas) {
				t.Fatalf("decode %s: %v", b, err)
			}
			for _, d := range back.Deltas {
				for _, f := range []string{"name", "unit", "old_median", "new_median", "p", "change_pct", "verdict", "old_n", "new_n"} {
					if _, ok := d[f]; !ok {
						t.Errorf("delta %v lacks %s", d, f)
					}
				}
				nulls := tc.want[d["name"].(string)+" "+d["unit"].(string)]
				for _, f := range []string{"old_median", "new_median", "p", "change_pct"} {
					if isNull := d[f] == nil; isNull != slices.Contains(strings.Split(nulls, ","), f) {
						t.Errorf("%s %s = %v, want null: %v\n%s", d["name"], f, d[f], !isNull, b)
					}
				}
			}
		})
	}
}

func TestTrendJSONNonFiniteIsNull(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		files []string
		nulls string // fields of the trend that must be null
	}{
		{"from zero: infinite change", []string{"BenchmarkZ 1 0 allocs/op\n", "BenchmarkZ 1 3 allocs/op\n"}, "change_pct"},
		{"finite", []string{"BenchmarkF 1 4 ns/op\n", "BenchmarkF 1 5 ns/op\n"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var metas []RecordMeta
			var sets []*Set
			for i, f := range tc.files {
				tm := start.Add(time.Duration(i) * 24 * time.Hour)
				metas = append(metas, RecordMeta{Time: tm, Commit: "c", Name: RecordName(tm, "c")})
				sets = append(sets, mustSet(t, []byte(f)))
			}
			ts := ComputeTrends(metas, sets, 10)
			b, err := json.Marshal(ts)
			if err != nil {
				t.Fatalf("json: %v", err)
			}
			var back []map[string]any
			if err := json.Unmarshal(b, &back); err != nil || len(back) != 1 {
				t.Fatalf("decode %s: %v", b, err)
			}
			for _, f := range []string{"first", "last", "median", "change_pct"} {
				if isNull := back[0][f] == nil; isNull != slices.Contains(strings.Split(tc.nulls, ","), f) {
					t.Errorf("%s = %v, want null: %v\n%s", f, back[0][f], !isNull, b)
				}
			}
			if pts, _ := back[0]["points"].([]any); len(pts) != len(tc.files) {
				t.Errorf("points %v\n%s", back[0]["points"], b)
			}
		})
	}
}
