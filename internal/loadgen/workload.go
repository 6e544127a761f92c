package loadgen

import (
	"encoding/json"
	"errors"

	"github.com/acgs-lite/acgs/internal/workload"
)

// The workload model lives in internal/workload, which the server also uses
// for its warm-up set; these names keep the load tool's API as it was.
type (
	// Workload is a weighted mix of request scenarios (workload.Workload).
	Workload = workload.Workload
	// Scenario is one kind of request in a workload (workload.Scenario).
	Scenario = workload.Scenario
	// Expect is the decision a scenario should get (workload.Expect).
	Expect = workload.Expect
	// VarySpec is one varied field of a scenario (workload.VarySpec).
	VarySpec = workload.VarySpec
)

// UniqueDigitsMarker is workload.UniqueDigitsMarker.
const UniqueDigitsMarker = workload.UniqueDigitsMarker

// DefaultWorkloadJSON returns the embedded acgs-mixed workload file.
func DefaultWorkloadJSON() []byte { return workload.DefaultJSON() }

// DefaultWorkload parses the embedded acgs-mixed workload.
func DefaultWorkload() (*Workload, error) { return workload.Default() }

// LoadWorkload reads and validates a workload file; an empty path means the
// embedded acgs-mixed workload.
func LoadWorkload(path string) (*Workload, error) { return workload.Load(path) }

// ParseWorkload decodes and validates a workload.
func ParseWorkload(data []byte) (*Workload, error) { return workload.Parse(data) }

// FixedWorkload is a workload of one request: body (a JSON object) sent to
// path with method (empty: POST), with no varied field, so that every
// request is the same. Run it with Options.Body set to the same bytes to
// send them byte for byte (the workload renders a body compacted with
// sorted keys). expectAllow, if not nil, is the decision the request should
// get, for the compliance figure.
func FixedWorkload(method, path string, body []byte, expectAllow *bool) (*Workload, error) {
	type scenario struct {
		Name    string          `json:"name"`
		Weight  float64         `json:"weight"`
		Expect  *Expect         `json:"expect,omitempty"`
		Request json.RawMessage `json:"request"`
	}
	doc := struct {
		Name      string     `json:"name"`
		Method    string     `json:"method,omitempty"`
		Path      string     `json:"path"`
		Scenarios []scenario `json:"scenarios"`
	}{Name: "fixed", Method: method, Path: path}
	if !json.Valid(body) {
		return nil, errors.New("fixed request: body is not valid JSON")
	}
	sc := scenario{Name: "request", Weight: 1, Request: body}
	if expectAllow != nil {
		sc.Expect = &Expect{Allow: expectAllow}
	}
	doc.Scenarios = []scenario{sc}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return ParseWorkload(b)
}
