package gateway

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// TestApprovalsPerAgentBound: one agent at approvals.max_pending_per_agent
// is refused while another is still held; a held call that leaves (by an
// approver's verdict, or by remove after a timeout or cancellation) frees
// its agent's slot exactly once; an agent with nothing held has no key.
func TestApprovalsPerAgentBound(t *testing.T) {
	// op: "add" holds a call of agent (want its error, nil when held);
	// "resolve" and "remove" take the n-th held call out (0-based, in
	// add order), "resolve+remove" both (an approver's verdict racing the
	// timeout), "remove+resolve" the other way round.
	type op struct {
		do    string
		agent string
		n     int
		want  error
	}
	for _, c := range []struct {
		name          string
		max, perAgent int
		ops           []op
		byAgent       map[string]int // at the end
		uncounted     int            // onAdd's counts undone
	}{
		{
			name: "A at its bound, B still held", max: 10, perAgent: 2,
			ops: []op{
				{do: "add", agent: "A"}, {do: "add", agent: "A"},
				{do: "add", agent: "A", want: errTooManyPendingForAgent},
				{do: "add", agent: "B"},
			},
			byAgent: map[string]int{"A": 2, "B": 1},
		},
		{
			name: "resolving frees A's slot", max: 10, perAgent: 1,
			ops: []op{
				{do: "add", agent: "A"},
				{do: "add", agent: "A", want: errTooManyPendingForAgent},
				{do: "resolve", n: 0},
				{do: "add", agent: "A"},
			},
			byAgent: map[string]int{"A": 1}, uncounted: 1,
		},
		{
			name: "removing frees A's slot", max: 10, perAgent: 1,
			ops: []op{
				{do: "add", agent: "A"},
				{do: "remove", n: 0},
				{do: "add", agent: "A"},
				{do: "add", agent: "A", want: errTooManyPendingForAgent},
			},
			byAgent: map[string]int{"A": 1}, uncounted: 1,
		},
		{
			name: "the key goes at 0", max: 10, perAgent: 3,
			ops: []op{
				{do: "add", agent: "A"}, {do: "add", agent: "A"}, {do: "add", agent: "B"},
				{do: "resolve", n: 0}, {do: "remove", n: 1},
			},
			byAgent: map[string]int{"B": 1}, uncounted: 2,
		},
		{
			name: "a verdict then a timeout leave once", max: 10, perAgent: 2,
			ops: []op{
				{do: "add", agent: "A"}, {do: "add", agent: "A"},
				{do: "resolve+remove", n: 0},
			},
			byAgent: map[string]int{"A": 1}, uncounted: 1,
		},
		{
			name: "a timeout then a late verdict leave once", max: 10, perAgent: 2,
			ops: []op{
				{do: "add", agent: "A"}, {do: "add", agent: "A"},
				{do: "remove+resolve", n: 0},
			},
			byAgent: map[string]int{"A": 1}, uncounted: 1,
		},
		{
			name: "the global bound still applies under the per-agent one", max: 2, perAgent: 2,
			ops: []op{
				{do: "add", agent: "A"}, {do: "add", agent: "B"},
				{do: "add", agent: "C", want: errTooManyPending},
			},
			byAgent: map[string]int{"A": 1, "B": 1},
		},
		{
			name: "all full: the global bound's reason, even for an agent at its own", max: 2, perAgent: 1,
			ops: []op{
				{do: "add", agent: "A"}, {do: "add", agent: "B"},
				{do: "add", agent: "A", want: errTooManyPending},
			},
			byAgent: map[string]int{"A": 1, "B": 1},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			counted, uncounted := 0, 0
			s := newApprovals(c.max, c.perAgent, func(Approval) func() {
				counted++
				return func() { uncounted++ }
			})
			var held []*pending
			for i, o := range c.ops {
				switch o.do {
				case "add":
					p, err := s.add(Approval{Agent: o.agent, Tool: "remote__delete_record"})
					if !errors.Is(err, o.want) || (err == nil) != (p != nil) {
						t.Fatalf("op %d: add(%s) = %v, %v; want error %v", i, o.agent, p, err, o.want)
					}
					if p != nil {
						held = append(held, p)
					}
				case "resolve":
					if _, err := s.resolve(held[o.n].ID, resolution{verdict: Approved}); err != nil {
						t.Fatalf("op %d: resolve: %v", i, err)
					}
				case "remove":
					s.remove(held[o.n])
				case "resolve+remove":
					if _, err := s.resolve(held[o.n].ID, resolution{verdict: Approved}); err != nil {
						t.Fatalf("op %d: resolve: %v", i, err)
					}
					s.remove(held[o.n])
				case "remove+resolve":
					s.remove(held[o.n])
					if _, err := s.resolve(held[o.n].ID, resolution{verdict: Approved}); !errors.Is(err, errApprovalNotFound) {
						t.Fatalf("op %d: resolve after remove: %v, want %v", i, err, errApprovalNotFound)
					}
				default:
					t.Fatalf("op %d: unknown %q", i, o.do)
				}
			}
			if !maps.Equal(s.byAgent, c.byAgent) {
				t.Errorf("byAgent = %v, want %v", s.byAgent, c.byAgent)
			}
			total := 0
			for _, n := range s.byAgent {
				total += n
			}
			if total != len(s.byID) || len(s.list()) != len(s.byID) {
				t.Errorf("byAgent counts %d calls, byID holds %d", total, len(s.byID))
			}
			if uncounted != c.uncounted || counted-uncounted != len(s.byID) {
				t.Errorf("onAdd counted %d, undone %d (want %d undone), with %d held", counted, uncounted, c.uncounted, len(s.byID))
			}
		})
	}
}

// TestApprovalsBoundErrorsDiffer: the agent sees which bound refused its
// call, and an operator which setting to raise.
func TestApprovalsBoundErrorsDiffer(t *testing.T) {
	if errTooManyPending.Error() == errTooManyPendingForAgent.Error() {
		t.Fatal("the global and per-agent bounds give the same text")
	}
	for _, want := range []string{"this agent", "approvals.max_pending_per_agent"} {
		if !strings.Contains(errTooManyPendingForAgent.Error(), want) {
			t.Errorf("%q does not name %q", errTooManyPendingForAgent, want)
		}
	}
}
