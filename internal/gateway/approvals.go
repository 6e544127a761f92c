package gateway

import (
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"time"
)

// Verdict is how a held call ended.
type Verdict string

// Verdicts of a held call.
const (
	Approved  Verdict = "approved"
	Refused   Verdict = "refused"
	TimedOut  Verdict = "timed_out"
	Cancelled Verdict = "cancelled" // the agent gave up (its request was cancelled)
)

// Approval is one call held for a human decision, as the admin API lists it.
type Approval struct {
	ID         string    `json:"id"`
	DecisionID string    `json:"decision_id"`
	Agent      string    `json:"agent"`
	Session    string    `json:"session"`
	Tool       string    `json:"tool"` // full name, <upstream>__<tool>
	Upstream   string    `json:"upstream"`
	Arguments  any       `json:"arguments,omitempty"` // as decided on, unmasked: approvers see what they approve (the admin API needs its token)
	Reasons    []string  `json:"reasons"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
}

// resolution is what an approver sent.
type resolution struct {
	verdict Verdict
	by      string
	note    string
	token   tokenRef // the admin token of an approver's verdict
}

type pending struct {
	Approval
	done    chan resolution // buffered 1; written once
	counted func()          // undoes onAdd's count (the labels it counted under)
}

// approvals holds the calls waiting for a verdict.
type approvals struct {
	mu   sync.Mutex
	byID map[string]*pending
	max  int
	// byAgent counts the entries of byID per Approval.Agent; an agent
	// with none has no key (the map does not grow with every agent that
	// was ever held). perAgent bounds each count, so that one agent (a
	// runaway loop) cannot take all max slots from the others.
	byAgent  map[string]int
	perAgent int
	// onAdd counts a held call (metrics: pending per upstream and tool) and
	// returns what uncounts it: the labels are the ones of the moment it
	// was held, though the tool lists may change while it waits.
	onAdd func(a Approval) (uncount func())
}

var (
	errApprovalNotFound = errors.New("no pending approval with this id (unknown, already decided or expired)")
	errTooManyPending   = errors.New("too many calls are waiting for approval")
	// errTooManyPendingForAgent: the agent's own bound, not the global
	// one (the text says which setting the operator would raise).
	errTooManyPendingForAgent = errors.New("too many calls of this agent are waiting for approval (approvals.max_pending_per_agent)")
)

func newApprovals(max, perAgent int, onAdd func(Approval) func()) *approvals {
	if onAdd == nil {
		onAdd = func(Approval) func() { return func() {} }
	}
	return &approvals{byID: map[string]*pending{}, max: max, byAgent: map[string]int{}, perAgent: perAgent, onAdd: onAdd}
}

// add holds a call; the caller waits on p.done and must call remove.
// The global bound is checked first: the per-agent one is the reason only
// when there is room for others' calls (with max_pending_per_agent equal
// to max_pending, as when max_pending is below 100 and the per-agent bound
// is not set, the outcome is the global bound's alone, as before it).
func (s *approvals) add(a Approval) (*pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.max {
		return nil, errTooManyPending
	}
	if s.byAgent[a.Agent] >= s.perAgent {
		return nil, errTooManyPendingForAgent
	}
	a.ID = "apr_" + rand.Text()
	p := &pending{Approval: a, done: make(chan resolution, 1), counted: s.onAdd(a)}
	s.byID[a.ID] = p
	s.byAgent[a.Agent]++
	return p, nil
}

// drop takes p out of byID and undoes its counts; s.mu is held and p is in
// byID, so that each held call is dropped exactly once (by remove or
// resolve, whichever comes first).
func (s *approvals) drop(p *pending) {
	delete(s.byID, p.ID)
	if n := s.byAgent[p.Agent] - 1; n > 0 {
		s.byAgent[p.Agent] = n
	} else {
		delete(s.byAgent, p.Agent)
	}
	p.counted()
}

// remove forgets a held call (after its verdict, timeout or cancellation).
func (s *approvals) remove(p *pending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID[p.ID] == p {
		s.drop(p)
	}
}

// resolve delivers an approver's verdict; the held call proceeds or is
// refused. It fails for an id that is not pending.
func (s *approvals) resolve(id string, r resolution) (Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.byID[id]
	if !ok {
		return Approval{}, errApprovalNotFound
	}
	s.drop(p)
	p.done <- r
	return p.Approval, nil
}

// list returns the pending approvals, oldest first.
func (s *approvals) list() []Approval {
	s.mu.Lock()
	out := make([]Approval, 0, len(s.byID))
	for _, p := range s.byID {
		out = append(out, p.Approval)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Approval) int { return a.Created.Compare(b.Created) })
	return out
}
