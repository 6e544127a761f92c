// Package workload is the workload model: a weighted mix of request
// scenarios in the format of shared/spec/workloads/acgs-mixed.json (an
// embedded copy is the default), and the request bodies each scenario
// expands to over its key space.
//
// The load tool (internal/loadgen) sends these bodies and the server warms
// its caches with them (CACHE_WARM_FILE), so the model lives here, apart
// from both: the server must not depend on the load tool, and the load tool
// must not import the service's packages. It does no I/O beyond reading a
// workload file and sends nothing.
package workload

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// defaultWorkloadJSON is a byte-for-byte copy of the spec's acgs-mixed.json so
// that `acgs bench` works without a checkout of the spec; a test keeps the two
// identical when the spec is present.
//
//go:embed workloads/acgs-mixed.json
var defaultWorkloadJSON []byte

// DefaultJSON returns the embedded acgs-mixed workload file.
func DefaultJSON() []byte { return slices.Clone(defaultWorkloadJSON) }

// Default parses the embedded acgs-mixed workload.
func Default() (*Workload, error) { return Parse(defaultWorkloadJSON) }

// Workload is a weighted mix of request scenarios, in the format of
// shared/spec/workloads/acgs-mixed.json.
type Workload struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Method      string     `json:"method,omitempty"`
	Path        string     `json:"path"`
	Scenarios   []Scenario `json:"scenarios"`

	cumulative []float64 // running sum of weights, for Pick
}

// Scenario is one kind of request with its share of the mix, the decision the
// constitution is expected to give, and the fields varied per request so that
// caches see a bounded key space instead of one hot key.
type Scenario struct {
	Name string `json:"name"`
	// Weight is relative: a scenario's share of the mix is its weight over
	// the sum of the workload's weights, so the weights need not add up to
	// 1 or 100 (70/20/10 and 7/2/1 are the same mix). Each must be > 0 (a
	// negative, zero or non-numeric weight is refused, so all-zero weights
	// are too) and their sum finite.
	Weight  float64             `json:"weight"`
	Expect  *Expect             `json:"expect,omitempty"`
	Vary    map[string]VarySpec `json:"vary,omitempty"`
	Request json.RawMessage     `json:"request"`

	tmpl bodyTemplate
}

// Expect is the decision a scenario should get; a nil Allow means "not judged"
// (such requests do not count towards constitutional compliance).
type Expect struct {
	Allow *bool `json:"allow"`
}

// VarySpec replaces the string at a dotted path of the request with
// fmt.Sprintf(Format, i) for i in [0, Cardinality).
type VarySpec struct {
	Format      string `json:"format"`
	Cardinality int64  `json:"cardinality"`
}

// Load reads and validates a workload file; an empty path means the
// embedded acgs-mixed workload.
func Load(path string) (*Workload, error) {
	if path == "" {
		return Default()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	w, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

// Parse decodes and validates a workload. Unknown fields are errors
// (outside the free-form request templates) because a misspelt "cardinality"
// or "weight" would otherwise silently change what is measured.
func Parse(data []byte) (*Workload, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w Workload
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("workload: invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("workload: invalid JSON: trailing data after the workload object")
	}
	if err := w.compile(); err != nil {
		return nil, err
	}
	return &w, nil
}

func (w *Workload) compile() error {
	if strings.TrimSpace(w.Name) == "" {
		return errors.New("workload: missing name")
	}
	if w.Method == "" {
		w.Method = "POST"
	}
	w.Method = strings.ToUpper(w.Method)
	if w.Method != "POST" && w.Method != "PUT" {
		return fmt.Errorf("workload %q: method %q: only POST and PUT carry a request body", w.Name, w.Method)
	}
	if !strings.HasPrefix(w.Path, "/") {
		return fmt.Errorf("workload %q: path %q must start with /", w.Name, w.Path)
	}
	if len(w.Scenarios) == 0 {
		return fmt.Errorf("workload %q: no scenarios", w.Name)
	}
	seen := map[string]bool{}
	w.cumulative = w.cumulative[:0]
	total := 0.0
	for i := range w.Scenarios {
		s := &w.Scenarios[i]
		if strings.TrimSpace(s.Name) == "" {
			return fmt.Errorf("workload %q: scenario %d: missing name", w.Name, i)
		}
		if seen[s.Name] {
			return fmt.Errorf("workload %q: scenario %q: duplicate name", w.Name, s.Name)
		}
		seen[s.Name] = true
		if !(s.Weight > 0) {
			return fmt.Errorf("workload %q: scenario %q: weight must be > 0 (got %v)", w.Name, s.Name, s.Weight)
		}
		if err := s.compile(); err != nil {
			return fmt.Errorf("workload %q: scenario %q: %w", w.Name, s.Name, err)
		}
		total += s.Weight
		if math.IsInf(total, 0) {
			// Pick would draw every request from the scenario where the
			// sum first overflows.
			return fmt.Errorf("workload %q: scenario %q: the weights add up to more than %g", w.Name, s.Name, math.MaxFloat64)
		}
		w.cumulative = append(w.cumulative, total)
	}
	return nil
}

// Pick chooses a scenario index in proportion to the weights.
func (w *Workload) Pick(r *rand.Rand) int {
	x := r.Float64() * w.cumulative[len(w.cumulative)-1]
	i, _ := slices.BinarySearch(w.cumulative, x)
	if i < len(w.cumulative) && w.cumulative[i] == x {
		i++ // x equal to a boundary belongs to the next scenario
	}
	return min(i, len(w.cumulative)-1)
}

// Scenario returns the scenario with the given name, or nil.
func (w *Workload) Scenario(name string) *Scenario {
	for i := range w.Scenarios {
		if w.Scenarios[i].Name == name {
			return &w.Scenarios[i]
		}
	}
	return nil
}

// verbRE matches one integer verb such as %d or %05d.
var verbRE = regexp.MustCompile(`%[-+# 0]*[0-9]*d`)

func checkFormat(format string) error {
	rest := strings.ReplaceAll(format, "%%", "")
	if n := len(verbRE.FindAllString(rest, -1)); n != 1 {
		return fmt.Errorf("format %q must contain exactly one %%d verb (found %d)", format, n)
	}
	if strings.Contains(verbRE.ReplaceAllString(rest, ""), "%") {
		return fmt.Errorf("format %q: only one %%d verb is allowed", format)
	}
	return nil
}

func (s *Scenario) compile() error {
	if r := bytes.TrimSpace(s.Request); len(r) == 0 || string(r) == "null" {
		return errors.New("missing request")
	}
	var req map[string]any
	d := json.NewDecoder(bytes.NewReader(s.Request))
	d.UseNumber() // keep numbers exactly as written (no float64 round trip)
	if err := d.Decode(&req); err != nil || req == nil {
		return errors.New("request must be a JSON object")
	}
	paths := make([]string, 0, len(s.Vary))
	for p := range s.Vary {
		paths = append(paths, p)
	}
	slices.Sort(paths) // deterministic bodies regardless of map order
	s.tmpl = bodyTemplate{}
	for i, p := range paths {
		spec := s.Vary[p]
		if err := checkFormat(spec.Format); err != nil {
			return fmt.Errorf("vary %q: %w", p, err)
		}
		if spec.Cardinality <= 0 {
			return fmt.Errorf("vary %q: cardinality must be > 0 (got %d)", p, spec.Cardinality)
		}
		if err := setPath(req, p, sentinel(i)); err != nil {
			return fmt.Errorf("vary %q: %w", p, err)
		}
		s.tmpl.varies = append(s.tmpl.varies, compiledVary{path: p, format: spec.Format, card: spec.Cardinality})
	}
	// Every decimal fraction of the request becomes a slot too: a unique
	// (cold) body perturbs each of them below its printed precision, so that
	// it also differs in fields the policy reads. Varying an id alone no
	// longer makes an input cold for a cache keyed on what the policy reads.
	var fracs []string
	req = markFractions(req, &fracs).(map[string]any)
	raw, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	// Split the rendered body at each quoted sentinel so that a body is a
	// concatenation of constant parts and slots: no re-marshalling per
	// request, which would make the load tool the bottleneck.
	type placed struct {
		pos, len int
		slot     slot
	}
	var found []placed
	find := func(sentinel string, sl slot) error {
		q := strconv.Quote(sentinel)
		pos := bytes.Index(raw, []byte(q))
		if pos < 0 {
			return fmt.Errorf("internal error: placeholder %s lost", sentinel)
		}
		if bytes.Count(raw, []byte(q)) > 1 {
			// the request holds the placeholder's text itself: the
			// body would be split at the wrong place
			return fmt.Errorf("request: the string %s is reserved (it marks a varied field or a fraction)", q)
		}
		found = append(found, placed{pos: pos, len: len(q), slot: sl})
		return nil
	}
	for i := range s.tmpl.varies {
		if err := find(sentinel(i), slot{vary: i}); err != nil {
			return fmt.Errorf("vary %q: %w", s.tmpl.varies[i].path, err)
		}
	}
	for i, f := range fracs {
		if err := find(fracSentinel(i), slot{vary: -1, frac: f}); err != nil {
			return err
		}
	}
	slices.SortFunc(found, func(a, b placed) int { return a.pos - b.pos })
	last := 0
	for _, p := range found {
		s.tmpl.parts = append(s.tmpl.parts, raw[last:p.pos])
		s.tmpl.slots = append(s.tmpl.slots, p.slot)
		last = p.pos + p.len
	}
	s.tmpl.parts = append(s.tmpl.parts, raw[last:])
	return nil
}

// markFractions replaces every json.Number written as a plain decimal
// fraction (digits, a point, digits; no exponent) with a sentinel string and
// records its text, in the order it walks.
func markFractions(v any, fracs *[]string) any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			x[k] = markFractions(x[k], fracs)
		}
		return x
	case []any:
		for i := range x {
			x[i] = markFractions(x[i], fracs)
		}
		return x
	case json.Number:
		t := string(x)
		if strings.Contains(t, ".") && !strings.ContainsAny(t, "eE") {
			*fracs = append(*fracs, t)
			return fracSentinel(len(*fracs) - 1)
		}
		return x
	default:
		return v
	}
}

func fracSentinel(i int) string { return fmt.Sprintf("@@acgs-loadgen-frac-%d@@", i) }

// UniqueDigitsMarker, in a suffix, makes AppendBody write this marker in
// place of a perturbation's digits, for a generator (the wrk script of
// acgs workload-lua) that substitutes them per request itself.
const UniqueDigitsMarker = "@UNIQN@"

// appendPerturbation writes the digits that make a fraction unique for a
// suffix: nine zeros (the value moves by less than 1e-9 of a unit in its
// last written place) and then digits derived from the suffix.
func appendPerturbation(dst []byte, suffix string) []byte {
	dst = append(dst, "000000000"...)
	if strings.Contains(suffix, "@UNIQ@") {
		return append(dst, UniqueDigitsMarker...)
	}
	h := fnv.New64a()
	h.Write([]byte(suffix))
	return strconv.AppendUint(dst, h.Sum64()|1, 10) // never ends in 0: the digits are not trimmed away by a decimal parser
}

func sentinel(i int) string { return fmt.Sprintf("@@acgs-loadgen-vary-%d@@", i) }

// setPath replaces an existing scalar leaf; the leaf must exist so that a typo
// in a vary path is an error rather than a new field the policy ignores.
func setPath(obj map[string]any, path, value string) error {
	keys := strings.Split(path, ".")
	for i, k := range keys {
		if k == "" {
			return errors.New("bad path: empty segment")
		}
		v, ok := obj[k]
		if !ok {
			return fmt.Errorf("bad path: key %q not found in request", strings.Join(keys[:i+1], "."))
		}
		if i == len(keys)-1 {
			switch v.(type) {
			case map[string]any, []any:
				return fmt.Errorf("bad path: %q is not a string or number", path)
			}
			obj[k] = value
			return nil
		}
		next, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("bad path: %q is not an object", strings.Join(keys[:i+1], "."))
		}
		obj = next
	}
	return nil
}

type compiledVary struct {
	path   string
	format string
	card   int64
}

type bodyTemplate struct {
	parts  [][]byte // len(parts) == len(slots)+1
	slots  []slot   // between parts, in body order
	varies []compiledVary
}

// slot is a varied string (vary >= 0, an index into varies) or a decimal
// fraction of the request (vary < 0, frac its text).
type slot struct {
	vary int
	frac string
}

// KeySpace is the number of distinct bodies the scenario produces (the
// largest cardinality; all varied fields move together with the index).
func (s *Scenario) KeySpace() int64 {
	n := int64(1)
	for _, v := range s.tmpl.varies {
		n = max(n, v.card)
	}
	return n
}

// Varies reports whether the scenario has at least one varied field or
// decimal fraction, which is what makes cache-missing (cold) inputs possible.
func (s *Scenario) Varies() bool { return len(s.tmpl.slots) > 0 }

// AppendBody appends the request body for key index idx to dst. Each varied
// field takes fmt.Sprintf(format, idx mod cardinality). A non-empty suffix
// is how cold inputs are made unique (a run nonce) so that they miss every
// cache tier: it is appended to every varied value, and every decimal
// fraction of the request gets digits derived from it below its printed
// precision (0.9 becomes 0.9000000000<digits>), so that the input also
// differs in what the policy reads, not only in ids it ignores.
func (s *Scenario) AppendBody(dst []byte, idx int64, suffix string) []byte {
	t := &s.tmpl
	for i, sl := range t.slots {
		dst = append(dst, t.parts[i]...)
		if sl.vary < 0 {
			dst = append(dst, sl.frac...)
			if suffix != "" {
				dst = appendPerturbation(dst, suffix)
			}
			continue
		}
		v := t.varies[sl.vary]
		val := fmt.Sprintf(v.format, idx%v.card) + suffix
		dst = appendJSONString(dst, val)
	}
	return append(dst, t.parts[len(t.parts)-1]...)
}

func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, fmt.Sprintf(`\u%04x`, c)...)
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
