package loadgen

import "github.com/acgs-lite/acgs/internal/workload"

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
