package loadgen

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// Status is the verdict on one objective.
type Status string

// Statuses, from best to worst. NoData is a violation for gating purposes: an
// objective that cannot be checked has not been met.
const (
	StatusOK        Status = "ok"
	StatusWarning   Status = "warning"
	StatusViolation Status = "violation"
	StatusNoData    Status = "no-data"
)

// Objective is one service-level objective with a hard limit and a warning
// level inside it.
type Objective struct {
	Name string `json:"name"`
	Unit string `json:"unit,omitempty"`
	// Max objectives must stay at or below Limit (latency, error rate);
	// otherwise the value must stay at or above Limit (throughput, hit rate).
	Max   bool    `json:"max"`
	Limit float64 `json:"limit"`
	// Warn is the level past which the objective is reported as a warning
	// while still met (same direction as Limit).
	Warn float64 `json:"warn"`
}

// MaxObjective is "value <= limit", warning once warnFraction of the limit
// is used (warnFraction 0.8: a 5 ms p99 budget warns above 4 ms).
func MaxObjective(name, unit string, limit, warnFraction float64) Objective {
	return Objective{Name: name, Unit: unit, Max: true, Limit: limit, Warn: limit * warnFraction}
}

// MinRatioObjective is "ratio >= limit" for a ratio in [0,1] such as a cache
// hit rate. The budget is the shortfall 1-limit; it warns once warnFraction of
// that budget is used (limit 0.95, 0.8: warns below 0.96).
func MinRatioObjective(name string, limit, warnFraction float64) Objective {
	return Objective{Name: name, Unit: "ratio", Limit: limit, Warn: 1 - (1-limit)*warnFraction}
}

// MinObjective is "value >= limit" for an unbounded quantity such as
// throughput; it warns when the value is within the headroom
// limit/warnFraction (limit 1000 req/s, 0.8: warns below 1250).
func MinObjective(name, unit string, limit, warnFraction float64) Objective {
	warn := limit
	if warnFraction > 0 {
		warn = limit / warnFraction
	}
	return Objective{Name: name, Unit: unit, Limit: limit, Warn: warn}
}

// Check is an objective judged against a measured value.
type Check struct {
	Objective
	Value  *float64 `json:"value"` // nil: no data
	Status Status   `json:"status"`
}

// Judge evaluates one objective. value is nil when there was nothing to
// measure; a NaN value is also treated as no data.
func Judge(o Objective, value *float64) Check {
	c := Check{Objective: o, Value: value}
	switch {
	case value == nil || math.IsNaN(*value):
		c.Value = nil
		c.Status = StatusNoData
	case o.Max && *value > o.Limit, !o.Max && *value < o.Limit:
		c.Status = StatusViolation
	case o.Max && *value > o.Warn, !o.Max && *value < o.Warn:
		c.Status = StatusWarning
	default:
		c.Status = StatusOK
	}
	return c
}

// Report is a set of judged objectives.
type Report struct {
	Checks []Check `json:"checks"`
	// Invalid says why the objectives themselves were refused (a NaN,
	// infinite, negative or out-of-range limit); such a report judged
	// nothing and fails.
	Invalid string `json:"invalid,omitempty"`
}

// LimitError is an objective's limit that cannot be one: NaN compares false
// with every measurement, so a NaN limit passed any run, and an infinite or
// negative one either passes everything or turned the objective off.
type LimitError struct {
	Field string  // the SLO struct's field, e.g. "P99Ms"
	Value float64 // the refused value
	Want  string  // what the field takes
}

func (e *LimitError) Error() string { return fmt.Sprintf("%s %v: want %s", e.Field, e.Value, e.Want) }

// sloLimit is one limit of an SLO struct for validation.
type sloLimit struct {
	field string
	v     float64
	share bool // a share in [0, 1]; otherwise a finite number >= 0
}

// validateLimits refuses NaN, infinite and negative limits, and shares above
// 1, naming the first bad field.
func validateLimits(limits []sloLimit) error {
	for _, l := range limits {
		switch {
		case l.share && !(l.v >= 0 && l.v <= 1):
			return &LimitError{Field: l.field, Value: l.v, Want: "a share in [0, 1]"}
		case !l.share && (!(l.v >= 0) || math.IsInf(l.v, 0)):
			return &LimitError{Field: l.field, Value: l.v, Want: "a finite number >= 0"}
		}
	}
	return nil
}

// Add judges an objective and appends it.
func (r *Report) Add(o Objective, value *float64) { r.Checks = append(r.Checks, Judge(o, value)) }

// Violations counts checks that failed (no data included).
func (r *Report) Violations() int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == StatusViolation || c.Status == StatusNoData {
			n++
		}
	}
	return n
}

// Warnings counts checks met but past their warning level.
func (r *Report) Warnings() int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == StatusWarning {
			n++
		}
	}
	return n
}

// ExitCode is 1 when any objective is violated or could not be measured, or
// the objectives were invalid, and 0 otherwise: warnings are reported but do
// not fail a gate.
func (r *Report) ExitCode() int {
	if r.Violations() > 0 || r.Invalid != "" {
		return 1
	}
	return 0
}

// Failed lists the names of failed objectives, for an error message.
func (r *Report) Failed() []string {
	var out []string
	if r.Invalid != "" {
		out = append(out, "invalid objective: "+r.Invalid)
	}
	for _, c := range r.Checks {
		if c.Status == StatusViolation || c.Status == StatusNoData {
			out = append(out, c.Name)
		}
	}
	return out
}

// WriteTable prints the report as an aligned table.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OBJECTIVE\tVALUE\tTARGET\tWARN AT\tSTATUS")
	for _, c := range r.Checks {
		op, wop := ">=", "<"
		if c.Max {
			op, wop = "<=", ">"
		}
		val := "-"
		if c.Value != nil {
			val = formatValue(*c.Value, c.Unit)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s %s\t%s\n", c.Name, val, op, formatValue(c.Limit, c.Unit),
			wop, formatValue(c.Warn, c.Unit), strings.ToUpper(string(c.Status)))
	}
	if r.Invalid != "" {
		fmt.Fprintf(tw, "\ninvalid objective, nothing judged: %s\n", r.Invalid)
	}
	fmt.Fprintf(tw, "\n%d violation(s), %d warning(s)\n", r.Violations(), r.Warnings())
	return tw.Flush()
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "ratio":
		return fmt.Sprintf("%.2f%%", v*100)
	case "":
		return fmt.Sprintf("%.4g", v)
	default:
		return fmt.Sprintf("%.4g %s", v, unit)
	}
}

// LoadSLO is the set of objectives `acgs load` gates on.
type LoadSLO struct {
	P99Ms         float64 // 0: not checked
	MaxErrorRate  float64
	MaxShedRate   float64 // share of requests shed for overload; 0: not checked
	MinRPS        float64 // 0: not checked
	MinCompliance float64 // 0: not checked
	WarnFraction  float64 // in [0, 1]; 0: 0.8
}

// Validate refuses a limit that is NaN, infinite or negative, and a rate,
// share or WarnFraction above 1, with a *LimitError naming the field.
func (s LoadSLO) Validate() error {
	return validateLimits([]sloLimit{
		{"P99Ms", s.P99Ms, false}, {"MaxErrorRate", s.MaxErrorRate, true}, {"MaxShedRate", s.MaxShedRate, true},
		{"MinRPS", s.MinRPS, false}, {"MinCompliance", s.MinCompliance, true}, {"WarnFraction", s.WarnFraction, true},
	})
}

// Evaluate judges a load result. An invalid run (achieved rate below target)
// is a violation of its own: its latencies describe another load. Objectives
// that Validate refuses judge nothing: the report fails, saying why.
func (s LoadSLO) Evaluate(res *Result) *Report {
	if err := s.Validate(); err != nil {
		return &Report{Invalid: err.Error()}
	}
	wf := s.WarnFraction
	if wf == 0 {
		wf = 0.8
	}
	rep := &Report{}
	if res.TargetRate > 0 {
		ratio := res.AchievedRate / res.TargetRate
		rep.Add(MinObjective("achieved rate / target", "", MinAchievedRatio, 1), &ratio)
	}
	// Shed requests (503 overloaded) have no latency in the histogram and
	// are judged by the shed-rate objective: the latency objective needs
	// answered requests (a run all shed has none, which is no data, not
	// 0 ms), and the error rate is of the requests the service answered.
	var lat, errRate *float64
	if res.Total.Latency.Count > 0 {
		p99 := res.Total.Latency.P99Ms
		lat = &p99
	}
	if e, ok := res.Total.errorRate(); ok { // the result's ErrorRate
		errRate = &e
	}
	if s.P99Ms > 0 {
		rep.Add(MaxObjective("p99 latency", "ms", s.P99Ms, wf), lat)
	}
	rep.Add(MaxObjective("error rate", "ratio", s.MaxErrorRate, wf), errRate)
	if s.MaxShedRate > 0 {
		var shed *float64
		if res.Total.Requests > 0 {
			shed = &res.Total.ShedRate
		}
		rep.Add(MaxObjective("shed rate", "ratio", s.MaxShedRate, wf), shed)
	}
	if s.MinRPS > 0 {
		// Decisions per second: requests refused or failed are not throughput.
		rps := res.Goodput
		rep.Add(MinObjective("throughput", "req/s", s.MinRPS, wf), &rps)
	}
	if s.MinCompliance > 0 {
		rep.Add(MinRatioObjective("constitutional compliance", s.MinCompliance, wf), res.Compliance)
	}
	return rep
}
