package gateway

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// window is the span of calls_last_minute.
const window = 60 // seconds

// Counter counts each agent's tool calls: what the constitution's rate
// limit reads as calls_last_minute. The agent cannot forge it: the gateway
// counts the calls it receives.
type Counter interface {
	// Add records one call by agent at now and returns how many calls the
	// agent made in the minute before it (the seconds now-59s .. now,
	// this call excluded), and its Ticket, whose GiveBack takes this call
	// back: one that was not decided nor forwarded (shed for overload, or
	// cancelled while its decision waited), which the agent may make
	// again. GiveBack takes back only what this Add counted (a count
	// whose increment is not known to have happened stays: one too many,
	// never one of the agent's real calls taken away), at most once,
	// never below zero, and nothing once now's second has left the
	// window. Another implementation makes its tickets with TicketFunc;
	// the zero Ticket gives nothing back.
	Add(ctx context.Context, agent string, now time.Time) (calls int64, t Ticket, err error)
	Close()
}

// Ticket is one call a Counter counted, which GiveBack can take back. It
// is a value (the gateway's own counters make one without allocating:
// their give-back was a closure and a sync.Once a call), not copied once
// made: its once-only is its own field, safe for concurrent GiveBacks as
// the sync.Once was, but each copy would give the call back again. That
// field, an atomic.Bool, has go vet's copylocks check report a Ticket
// copied after it was made.
type Ticket struct {
	c       giver  // nil: nothing to give back
	agent   string // for the gateway's counters
	sec     int64
	counted bool // Redis answered this call's INCR
	given   atomic.Bool
}

// giver gives back one call of agent at second sec; counted says whether
// Redis counted it.
type giver interface {
	giveBack(ctx context.Context, agent string, sec int64, counted bool)
}

// TicketFunc is a Ticket whose GiveBack calls f (at most once): for a
// Counter of another implementation. A nil f gives nothing back.
func TicketFunc(f func(context.Context)) Ticket {
	if f == nil {
		return Ticket{}
	}
	return Ticket{c: giveFunc(f)}
}

type giveFunc func(context.Context)

func (f giveFunc) giveBack(ctx context.Context, _ string, _ int64, _ bool) { f(ctx) }

// GiveBack takes the call back, once (Counter.Add).
func (t *Ticket) GiveBack(ctx context.Context) {
	if t.c == nil || !t.given.CompareAndSwap(false, true) {
		return
	}
	t.c.giveBack(ctx, t.agent, t.sec, t.counted)
}

// localCounter counts in process: sixty one-second buckets per agent.
type localCounter struct {
	mu     sync.Mutex
	agents map[string]*buckets
}

type buckets struct {
	sec   [window]int64 // the second each bucket counts
	calls [window]int64
}

func newLocalCounter() *localCounter { return &localCounter{agents: map[string]*buckets{}} }

func (c *localCounter) Add(_ context.Context, agent string, now time.Time) (int64, Ticket, error) {
	s := now.Unix()
	return c.count(agent, s), Ticket{c: c, agent: agent, sec: s}, nil
}

// count records one call by agent in second s and returns how many it
// made in the minute before.
func (c *localCounter) count(agent string, s int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.agents[agent]
	if b == nil {
		b = &buckets{}
		c.agents[agent] = b
	}
	var n int64
	for i := range b.sec {
		if b.sec[i] > s-window && b.sec[i] <= s {
			n += b.calls[i]
		}
	}
	i := s % window
	if b.sec[i] != s {
		b.sec[i], b.calls[i] = s, 0
	}
	b.calls[i]++
	return n
}

// giveBack takes one call back from agent's count of second s.
func (c *localCounter) giveBack(_ context.Context, agent string, s int64, _ bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.agents[agent]
	if b == nil {
		return
	}
	// The bucket still counts second s (not a later one that took it
	// over) and holds the call.
	if i := s % window; b.sec[i] == s && b.calls[i] > 0 {
		b.calls[i]--
	}
}

func (c *localCounter) Close() {}

// redisCounter keeps the buckets in Redis, one key per agent and second
// (<prefix>calls:{<agent>}:<unix second>, expiring after two minutes), so
// that every replica of the gateway sees every call. The agent is the key's
// hash tag, so one agent's keys share a cluster slot and one MGET reads
// them. A Redis error falls back to the in-process counter for that call,
// which counts this replica's calls all along.
type redisCounter struct {
	client   rueidis.Client
	prefix   string
	fallback *localCounter
	timeout  time.Duration
	onError  func(error)
}

func newRedisCounter(rawURL, prefix string, onError func(error)) (*redisCounter, error) {
	list := strings.Split(rawURL, ",")
	opt, err := rueidis.ParseURL(strings.TrimSpace(list[0]))
	if err != nil {
		return nil, fmt.Errorf("gateway counters: redis url: %w", err)
	}
	for _, extra := range list[1:] {
		o, err := rueidis.ParseURL(strings.TrimSpace(extra))
		if err != nil {
			return nil, fmt.Errorf("gateway counters: redis url: %w", err)
		}
		opt.InitAddress = append(opt.InitAddress, o.InitAddress...)
	}
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("gateway counters: connecting to redis: %w", err)
	}
	if onError == nil {
		onError = func(error) {}
	}
	return &redisCounter{client: client, prefix: prefix, fallback: newLocalCounter(), timeout: 50 * time.Millisecond, onError: onError}, nil
}

func (c *redisCounter) key(agent string, sec int64) string {
	// Braces in the agent would move the hash tag: escape them.
	a := strings.NewReplacer("{", "%7B", "}", "%7D").Replace(agent)
	return c.prefix + "calls:{" + a + "}:" + strconv.FormatInt(sec, 10)
}

// Add counts the call in Redis, bounded by the counter's timeout and not
// by the call's context: an agent that cancels its call at once must not
// keep its INCR from Redis (the count then answered in process, and the
// give-back unable to tell whether Redis counted it).
func (c *redisCounter) Add(ctx context.Context, agent string, now time.Time) (int64, Ticket, error) {
	s := now.Unix()
	keys := make([]string, 0, window)
	for sec := s - window + 1; sec <= s; sec++ {
		keys = append(keys, c.key(agent, sec))
	}
	cur := keys[len(keys)-1]
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	// This replica's own count goes on too: when Redis fails, the
	// fallback answers with this replica's calls of the last minute, not
	// from zero.
	local := c.fallback.count(agent, s)
	// INCR before MGET: a call made at the same time on another replica
	// is then seen by at least one of the two (MGET first, neither saw the
	// other). The sum includes this call's own INCR.
	res := c.client.DoMulti(ctx,
		c.client.B().Incr().Key(cur).Build(),
		c.client.B().Expire().Key(cur).Seconds(2*window).Build(),
		c.client.B().Mget().Key(keys...).Build(),
	)
	// Redis counted this call only when it answered the INCR; an error
	// (timeout, connection lost) leaves it unknown, and the give-back
	// then leaves Redis alone: one call too many for a minute rather
	// than one of the agent's real calls taken back.
	_, incrErr := res[0].AsInt64()
	counted := incrErr == nil
	for _, r := range res {
		if err := r.Error(); err != nil {
			c.onError(err)
			return local, Ticket{c: c, agent: agent, sec: s, counted: counted}, nil
		}
	}
	vals, err := res[2].ToArray()
	if err != nil {
		c.onError(err)
		return local, Ticket{c: c, agent: agent, sec: s, counted: counted}, nil
	}
	var n int64
	for _, v := range vals {
		if v.IsNil() {
			continue
		}
		x, err := v.AsInt64()
		if err == nil {
			n += x
		}
	}
	return max(n-1, 0), Ticket{c: c, agent: agent, sec: s, counted: counted}, nil
}

// undoScript decrements a second's count unless it is gone or zero: a
// count never goes below zero, and an expired key is not made again.
var undoScript = rueidis.NewLuaScript(`local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n and n > 0 then return redis.call('DECR', KEYS[1]) end
return 0`)

// giveBack is the give-back of one Add of agent at second s: it takes the
// call back from this replica's own count and, when Redis answered its
// INCR (counted), from Redis (its Ticket makes it once). The Redis round
// trip is bounded by the counter's timeout, not by the caller's context,
// so a shed call waits no longer for it than for its count.
func (c *redisCounter) giveBack(ctx context.Context, agent string, s int64, counted bool) {
	c.fallback.giveBack(ctx, agent, s, false)
	if !counted {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	if err := undoScript.Exec(ctx, c.client, []string{c.key(agent, s)}, nil).Error(); err != nil {
		c.onError(err)
	}
}

func (c *redisCounter) Close() { c.client.Close() }
