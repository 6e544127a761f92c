package workload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// decodeUseNumber decodes one JSON value keeping numbers as written.
func decodeUseNumber(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

// refSet sets the value at a dotted path of a decoded request (the
// reference for the template's slots: no sentinels, no splicing).
func refSet(v any, path string, val any) {
	keys := strings.Split(path, ".")
	m := v.(map[string]any)
	for _, k := range keys[:len(keys)-1] {
		m = m[k].(map[string]any)
	}
	m[keys[len(keys)-1]] = val
}

// sameBody compares a decoded body with the reference request: equal,
// except that with a suffix a decimal fraction of the request (digits, a
// point, digits, no exponent) is the same text followed by nine zeros and
// more digits.
func sameBody(got, want any, perturbed bool) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok || !sameBody(gv, wv, perturbed) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !sameBody(g[i], w[i], perturbed) {
				return false
			}
		}
		return true
	case json.Number:
		g, ok := got.(json.Number)
		if !ok {
			return false
		}
		if perturbed && strings.Contains(string(w), ".") && !strings.ContainsAny(string(w), "eE") {
			rest, ok := strings.CutPrefix(string(g), string(w)+"000000000")
			return ok && rest != "" && strings.Trim(rest, "0123456789") == ""
		}
		return g == w
	default:
		return reflect.DeepEqual(got, want)
	}
}

// FuzzParseWorkload: Parse (workload files users write, and
// CACHE_WARM_FILE) returns an error or a workload with the invariants
// compile promises: a name, POST or PUT, a path starting with /, scenarios
// with unique names and weights > 0 whose sum is finite (Pick draws from
// it), and every scenario's body, for any key index and suffix, is the
// request as written (decoded the same way) with each varied field set to
// fmt.Sprintf(format, idx mod cardinality)+suffix and, with a suffix,
// each decimal fraction extended below its printed digits.
func FuzzParseWorkload(f *testing.F) {
	f.Add(DefaultJSON())
	f.Add([]byte(validWorkload))
	f.Add([]byte(`{"name":"w","method":"put","path":"/v1/data/x","scenarios":[
		{"name":"a","weight":0.5,"request":{"x":1.25,"y":[0.5,{"z":-3.0e2}],"s":"t"}},
		{"name":"b","weight":2,"vary":{"p.q":{"format":"%05d%%","cardinality":7},"r":{"format":"r-%+d","cardinality":1}},
		 "request":{"p":{"q":0.75},"r":null,"u":"\u0001\"\\"}}]}`))
	f.Add([]byte(`{"name":"w","path":"/p","scenarios":[{"name":"s","weight":1,"vary":{"b":{"format":"%d","cardinality":9223372036854775807}},"request":{"a":"@@acgs-loadgen-vary-0@@","b":"x"}}]}`))
	f.Add([]byte(`{"name":"w","path":"/p","scenarios":[{"name":"s","weight":1,"request":{"@@acgs-loadgen-frac-0@@":"k","b":0.5}}]}`))
	f.Add([]byte(`{"name":"w","path":"/p","scenarios":[{"name":"s","weight":1e308,"request":{}},{"name":"t","weight":1e308,"request":{}}]}`))
	f.Add([]byte(`{"name":"w","path":"/p","scenarios":[{"name":"s","weight":1,"request":{}}]} {}`))
	f.Add([]byte(`{"name":"w","path":"/p","scenarios":[{"name":"s","weight":1,"request":{"a":{"b":"c"}},"vary":{"a":{"format":"%d","cardinality":2}}}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := Parse(data)
		if err != nil {
			if w != nil {
				t.Fatal("a workload with an error")
			}
			if !strings.HasPrefix(err.Error(), "workload") {
				t.Fatalf("error does not say it is the workload's: %v", err)
			}
			return
		}
		if strings.TrimSpace(w.Name) == "" || (w.Method != "POST" && w.Method != "PUT") || !strings.HasPrefix(w.Path, "/") || len(w.Scenarios) == 0 {
			t.Fatalf("accepted %q %q %q with %d scenarios", w.Name, w.Method, w.Path, len(w.Scenarios))
		}
		total := 0.0
		names := map[string]bool{}
		for _, s := range w.Scenarios {
			if names[s.Name] || strings.TrimSpace(s.Name) == "" || !(s.Weight > 0) {
				t.Fatalf("accepted scenario %q weight %v", s.Name, s.Weight)
			}
			names[s.Name] = true
			total += s.Weight
		}
		if math.IsInf(total, 0) || math.IsNaN(total) {
			t.Fatalf("accepted weights summing to %v: Pick cannot draw from them", total)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 4 {
			if i := w.Pick(rng); i < 0 || i >= len(w.Scenarios) {
				t.Fatalf("Pick %d of %d", i, len(w.Scenarios))
			}
		}
		for si := range w.Scenarios {
			s := &w.Scenarios[si]
			var maxCard int64 = 1
			for _, v := range s.Vary {
				maxCard = max(maxCard, v.Cardinality)
			}
			if s.KeySpace() != maxCard {
				t.Fatalf("%s: key space %d, want %d", s.Name, s.KeySpace(), maxCard)
			}
			for _, idx := range []int64{0, 1, 1 << 40} {
				for _, suffix := range []string{"", "-cold-n1"} {
					body := s.AppendBody(nil, idx, suffix)
					got, err := decodeUseNumber(body)
					if err != nil || !json.Valid(body) {
						t.Fatalf("%s idx %d suffix %q: body %s is not JSON: %v", s.Name, idx, suffix, body, err)
					}
					want, err := decodeUseNumber(s.Request)
					if err != nil {
						t.Fatal(err)
					}
					for p, v := range s.Vary {
						refSet(want, p, fmt.Sprintf(v.Format, idx%v.Cardinality)+suffix)
					}
					if !sameBody(got, want, suffix != "") {
						t.Fatalf("%s idx %d suffix %q: body\n%s\nis not the request\n%s\nwith the varied fields set", s.Name, idx, suffix, body, s.Request)
					}
				}
			}
		}
	})
}
