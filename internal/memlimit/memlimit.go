// Package memlimit sizes the Go runtime's soft memory limit (GOMEMLIMIT) to
// the memory limit of the process's container (its cgroup, read with
// github.com/KimMachineGun/automemlimit), so that the garbage collector
// works harder as the heap nears what the container may use, instead of the
// kernel killing the process when the heap doubles past it.
//
// GOMEMLIMIT in the environment always wins (the runtime has applied it
// before main runs). The decision is made and applied once, at startup; the
// package does not watch the limit, and it never raises a limit that the
// runtime was given.
package memlimit

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"

	automemlimit "github.com/KimMachineGun/automemlimit/memlimit"
)

// DefaultRatio is the share of the container's limit given to the Go heap
// by default: the rest is for what the runtime does not count against
// GOMEMLIMIT (the binary's text, cgo, the kernel's page cache of the process)
// and for the heap overshooting the soft limit between collections.
const DefaultRatio = 0.9

// Source says where a decision's limit comes from.
type Source string

const (
	// FromEnvironment: GOMEMLIMIT is set; the runtime applied it, nothing is changed.
	FromEnvironment Source = "GOMEMLIMIT"
	// FromCgroup: the limit is Ratio × the container's memory limit.
	FromCgroup Source = "cgroup"
	// Off: sizing is turned off (ratio 0); the runtime keeps its default (no limit).
	Off Source = "off"
	// NoLimit: the container has no memory limit, or it could not be read;
	// the runtime keeps its default (no limit).
	NoLimit Source = "none"
)

// Decision is what to do with the runtime's memory limit and why.
type Decision struct {
	Source Source
	// Limit is the GOMEMLIMIT to set in bytes; 0 means leave the runtime's
	// limit as it is (set from the environment, or none).
	Limit int64
	// CgroupLimit is the container's memory limit in bytes (0: none or unknown).
	CgroupLimit uint64
	// Ratio is the share of CgroupLimit that Limit is.
	Ratio float64
	// Reason says why, for the startup log.
	Reason string
}

// Decide returns the memory limit for a process whose GOMEMLIMIT variable is
// env ("" when unset), sized at ratio (0: off) of the limit that cgroup
// reports (cgroup is called only when it is needed).
func Decide(env string, ratio float64, cgroup func() (uint64, error)) Decision {
	if env != "" {
		return Decision{Source: FromEnvironment, Ratio: ratio,
			Reason: fmt.Sprintf("GOMEMLIMIT=%s is set in the environment and wins over MEMORY_LIMIT_RATIO", env)}
	}
	if ratio == 0 {
		return Decision{Source: Off, Reason: "MEMORY_LIMIT_RATIO=0 turns sizing off: no memory limit (Go's default)"}
	}
	if math.IsNaN(ratio) || ratio < 0 || ratio > 1 {
		return Decision{Source: NoLimit, Ratio: ratio,
			Reason: fmt.Sprintf("MEMORY_LIMIT_RATIO=%g is not in (0, 1]: no memory limit (Go's default)", ratio)}
	}
	total, err := cgroup()
	switch {
	case errors.Is(err, automemlimit.ErrNoLimit) || (err == nil && total == 0):
		return Decision{Source: NoLimit, Ratio: ratio,
			Reason: "the container (cgroup) sets no memory limit: no memory limit (Go's default)"}
	case err != nil:
		return Decision{Source: NoLimit, Ratio: ratio,
			Reason: fmt.Sprintf("the container's memory limit could not be read (%v): no memory limit (Go's default)", err)}
	}
	limit := int64(math.MaxInt64)
	if f := float64(total) * ratio; f < math.MaxInt64 { // float64(MaxInt64) is 2^63: converting it back would overflow
		limit = max(int64(f), 1)
	}
	return Decision{Source: FromCgroup, Limit: limit, CgroupLimit: total, Ratio: ratio,
		Reason: fmt.Sprintf("GOMEMLIMIT = %g × the container's (cgroup's) memory limit of %d bytes", ratio, total)}
}

// Apply decides with the process's environment (lookupEnv) and the cgroup
// limit, sets the runtime's limit if the decision says so, and returns the
// decision and the limit now in force (math.MaxInt64: none).
func Apply(ratio float64, lookupEnv func(string) (string, bool)) (Decision, int64) {
	env, _ := lookupEnv("GOMEMLIMIT")
	d := Decide(env, ratio, automemlimit.FromCgroup)
	if d.Limit > 0 {
		debug.SetMemoryLimit(d.Limit)
	}
	return d, debug.SetMemoryLimit(-1)
}
