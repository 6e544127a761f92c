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
	Arguments  any       `json:"arguments,omitempty"` // as decided on (masked like the decision log)
	Reasons    []string  `json:"reasons"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
}

// resolution is what an approver sent.
type resolution struct {
	verdict Verdict
	by      string
	note    string
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
	// onAdd counts a held call (metrics: pending per upstream and tool) and
	// returns what uncounts it: the labels are the ones of the moment it
	// was held, though the tool lists may change while it waits.
	onAdd func(a Approval) (uncount func())
}

var (
	errApprovalNotFound = errors.New("no pending approval with this id (unknown, already decided or expired)")
	errTooManyPending   = errors.New("too many calls are waiting for approval")
)

func newApprovals(max int, onAdd func(Approval) func()) *approvals {
	if onAdd == nil {
		onAdd = func(Approval) func() { return func() {} }
	}
	return &approvals{byID: map[string]*pending{}, max: max, onAdd: onAdd}
}

// add holds a call; the caller waits on p.done and must call remove.
func (s *approvals) add(a Approval) (*pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.max {
		return nil, errTooManyPending
	}
	a.ID = "apr_" + rand.Text()
	p := &pending{Approval: a, done: make(chan resolution, 1), counted: s.onAdd(a)}
	s.byID[a.ID] = p
	return p, nil
}

// remove forgets a held call (after its verdict, timeout or cancellation).
func (s *approvals) remove(p *pending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID[p.ID] == p {
		delete(s.byID, p.ID)
		p.counted()
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
	delete(s.byID, id)
	p.counted()
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
