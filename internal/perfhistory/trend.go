package perfhistory

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"golang.org/x/perf/benchmath"
)

// TrendPoint is one record's median for a metric.
type TrendPoint struct {
	Time   time.Time `json:"time"`
	Commit string    `json:"commit"`
	Median float64   `json:"median"`
}

// Trend summarises a metric over a period.
type Trend struct {
	Key
	Points []TrendPoint `json:"points"`
	First  float64      `json:"first"`
	Last   float64      `json:"last"`
	Min    float64      `json:"min"`
	Max    float64      `json:"max"`
	Median float64      `json:"median"`
	// ChangePct is last versus first, in percent.
	ChangePct float64 `json:"change_pct"`
	// Direction is "improving", "worsening" or "flat": flat when the change
	// from first to last is within the regression threshold, so that the
	// word agrees with what compare would say.
	Direction string `json:"direction"`
}

// MarshalJSON writes an infinite ChangePct (the first median was 0) as
// null, which JSON has no number for. The medians are finite: the samples
// are (ParseBenchmarks refuses NaN and ±Inf).
func (t Trend) MarshalJSON() ([]byte, error) {
	type plain Trend // without this method
	return json.Marshal(struct {
		plain
		ChangePct *float64 `json:"change_pct"`
	}{plain(t), finite(t.ChangePct)})
}

// LoadSince fetches and parses every record not older than since, passing
// over damaged ones (ErrBadRecord), which it returns apart.
func LoadSince(ctx context.Context, s Store, since time.Time) ([]RecordMeta, []*Set, []SkippedRecord, error) {
	metas, err := s.List(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	var ms []RecordMeta
	var sets []*Set
	var skipped []SkippedRecord
	for _, m := range metas {
		if m.Time.Before(since) {
			continue
		}
		set, err := loadOrSkip(ctx, s, m, &skipped)
		if err != nil {
			return nil, nil, nil, err
		}
		if set != nil {
			ms = append(ms, m)
			sets = append(sets, set)
		}
	}
	return ms, sets, skipped, nil
}

// ComputeTrends builds one trend per metric from records (oldest first),
// each record contributing the median of its samples.
func ComputeTrends(metas []RecordMeta, sets []*Set, thresholdPct float64) []Trend {
	th := benchmath.DefaultThresholds
	idx := map[Key]int{}
	var out []Trend
	for i, set := range sets {
		for _, k := range set.Keys {
			j, ok := idx[k]
			if !ok {
				j = len(out)
				idx[k] = j
				out = append(out, Trend{Key: k})
			}
			med := median(benchmath.NewSample(set.Values[k], &th))
			out[j].Points = append(out[j].Points, TrendPoint{Time: metas[i].Time, Commit: metas[i].Commit, Median: med})
		}
	}
	var units = map[Key]Direction{}
	for _, set := range sets {
		for _, k := range set.Keys {
			units[k] = UnitDirection(k.Unit, set.Units)
		}
	}
	for i := range out {
		t := &out[i]
		vals := make([]float64, len(t.Points))
		for j, p := range t.Points {
			vals[j] = p.Median
		}
		t.First, t.Last = vals[0], vals[len(vals)-1]
		t.Min, t.Max = slices.Min(vals), slices.Max(vals)
		sorted := slices.Clone(vals)
		slices.Sort(sorted)
		t.Median = median(benchmath.NewSample(sorted, &th))
		switch t.First {
		case t.Last:
			t.ChangePct = 0
		case 0:
			t.ChangePct = math.Copysign(math.Inf(1), t.Last)
		default:
			t.ChangePct = (t.Last - t.First) / math.Abs(t.First) * 100
		}
		better := float64(units[t.Key]) * t.ChangePct // > 0 when improving
		switch {
		case len(vals) < 2 || math.Abs(t.ChangePct) <= thresholdPct:
			t.Direction = "flat"
		case better > 0:
			t.Direction = "improving"
		default:
			t.Direction = "worsening"
		}
	}
	return out
}

// Sparkline draws the points as a one-line chart for tables.
func (t *Trend) Sparkline() string {
	const bars = "▁▂▃▄▅▆▇█"
	runes := []rune(bars)
	if len(t.Points) == 0 {
		return ""
	}
	out := make([]rune, 0, len(t.Points))
	for _, p := range t.Points {
		k := 0
		if t.Max > t.Min {
			k = int(math.Round((p.Median - t.Min) / (t.Max - t.Min) * float64(len(runes)-1)))
		}
		out = append(out, runes[k])
	}
	return fmt.Sprint(string(out))
}
