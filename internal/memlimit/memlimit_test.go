package memlimit

import (
	"errors"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	automemlimit "github.com/KimMachineGun/automemlimit/memlimit"
)

func TestDecide(t *testing.T) {
	const gib = 1 << 30
	limit := func(n uint64, err error) func() (uint64, error) {
		return func() (uint64, error) { return n, err }
	}
	unread := func() (uint64, error) { panic("the cgroup must not be read") }
	tests := []struct {
		name   string
		env    string
		ratio  float64
		cgroup func() (uint64, error)
		want   Decision
		reason string // substring of Reason
	}{
		{"cgroup limit, default ratio", "", DefaultRatio, limit(gib, nil),
			Decision{Source: FromCgroup, Limit: 966367641 /* 0.9 GiB, rounded down */, CgroupLimit: gib, Ratio: 0.9}, "0.9 × the container"},
		{"cgroup limit, whole of it", "", 1, limit(512<<20, nil),
			Decision{Source: FromCgroup, Limit: 512 << 20, CgroupLimit: 512 << 20, Ratio: 1}, "536870912 bytes"},
		{"cgroup limit, half", "", 0.5, limit(100, nil),
			Decision{Source: FromCgroup, Limit: 50, CgroupLimit: 100, Ratio: 0.5}, "0.5"},
		{"tiny limit still sets a limit", "", 0.1, limit(1, nil),
			Decision{Source: FromCgroup, Limit: 1, CgroupLimit: 1, Ratio: 0.1}, ""},
		{"huge limit is capped", "", 1, limit(math.MaxUint64, nil),
			Decision{Source: FromCgroup, Limit: math.MaxInt64, CgroupLimit: math.MaxUint64, Ratio: 1}, ""},
		{"environment wins", "70MiB", DefaultRatio, unread,
			Decision{Source: FromEnvironment, Ratio: 0.9}, "GOMEMLIMIT=70MiB"},
		{"environment wins over off", "off", 0, unread,
			Decision{Source: FromEnvironment}, "GOMEMLIMIT=off"},
		{"off", "", 0, unread,
			Decision{Source: Off}, "MEMORY_LIMIT_RATIO=0"},
		{"no container limit", "", DefaultRatio, limit(0, automemlimit.ErrNoLimit),
			Decision{Source: NoLimit, Ratio: 0.9}, "sets no memory limit"},
		{"zero reported as no limit", "", DefaultRatio, limit(0, nil),
			Decision{Source: NoLimit, Ratio: 0.9}, "sets no memory limit"},
		{"not in a cgroup", "", DefaultRatio, limit(0, automemlimit.ErrNoCgroup),
			Decision{Source: NoLimit, Ratio: 0.9}, "could not be read (process is not in cgroup)"},
		{"unreadable", "", DefaultRatio, limit(0, errors.New("permission denied")),
			Decision{Source: NoLimit, Ratio: 0.9}, "permission denied"},
		{"ratio above 1 is refused", "", 1.5, unread,
			Decision{Source: NoLimit, Ratio: 1.5}, "not in (0, 1]"},
		{"negative ratio is refused", "", -0.5, unread,
			Decision{Source: NoLimit, Ratio: -0.5}, "not in (0, 1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.env, tt.ratio, tt.cgroup)
			if !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("reason %q does not say %q", got.Reason, tt.reason)
			}
			got.Reason = ""
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Apply leaves a limit from the environment alone and reports it.
func TestApplyKeepsEnvironment(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	debug.SetMemoryLimit(123 << 20) // as the runtime does for GOMEMLIMIT=123MiB
	d, now := Apply(DefaultRatio, func(k string) (string, bool) {
		if k == "GOMEMLIMIT" {
			return "123MiB", true
		}
		return os.LookupEnv(k)
	})
	if d.Source != FromEnvironment || now != 123<<20 {
		t.Fatalf("got %+v with limit %d, want the environment's 123MiB kept", d, now)
	}
}

// Apply with sizing off leaves the runtime's limit as it was.
func TestApplyOff(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	d, now := Apply(0, func(string) (string, bool) { return "", false })
	if d.Source != Off || now != before {
		t.Fatalf("got %+v with limit %d, want off and %d", d, now, before)
	}
}
