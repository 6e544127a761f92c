package cache

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/sony/gobreaker/v2"
)

// Timings of the L2 machinery that are not worth a setting.
const (
	healthInterval = time.Second            // epoch re-read and ping; heals a missed pub/sub message
	adminTimeout   = time.Second            // epoch reads, flushes, pings without a caller deadline
	flushTimeout   = 500 * time.Millisecond // one write-behind pipeline
	closeTimeout   = 2 * time.Second        // Close waits this long for pending writes
	startupWait    = 2 * time.Second        // New waits this long for the first connection
	breakerOpenFor = time.Second            // open → half-open
	maxBackoff     = 2 * time.Second
)

// errCallerGone marks an L2 failure caused by the caller's context ending; the
// breaker ignores it because it says nothing about Redis.
var errCallerGone = errors.New("cache: caller context ended")

// errNotAsked marks a call that sent Redis nothing (every write of a batch
// was skipped): neither a success nor a failure to the breaker, which,
// half-open, would otherwise close without a round trip.
var errNotAsked = errors.New("cache: nothing sent to redis")

// errNotConnected is returned by Flush while Redis has not been reached.
var errNotConnected = errors.New("cache: L2 (Redis) is not connected")

// errFlushNotConfirmed is returned by Flush when Redis did not answer the
// increment of the epoch by the flush's deadline: it may not have been
// sent, or sent and not yet done, or done with its answer lost. It may
// still take effect (l2.flush says how); a retry is harmless.
var errFlushNotConfirmed = errors.New("cache: flush not confirmed: Redis did not answer the increment of the epoch")

// maxAbandoned bounds the request-path reads given up at their deadline
// and still running (await): while that many are, L1 misses skip L2. The
// breaker opens long before (five failures in a row), so it only matters
// for a burst of concurrent requests meeting a Redis that stopped
// answering: each read so abandoned holds a goroutine until the client
// returns, which can take a dial's timeout (a second).
const maxAbandoned = 1024

// maxFlushAbandoned bounds the flushes' calls given up and still running
// (each waits for bg's redial at most the dial timeout): past it a Flush
// is not confirmed at once, without a call, so that an operator's retries
// in a loop while Redis is unreachable do not pile goroutines up (review).
const maxFlushAbandoned = 64

// clients are the two Redis clients of a connected L2. Request-path reads
// go through rd alone; everything else (the epoch, its subscription, the
// write-behind pipelines, flushes) through bg, with deadlines of up to a
// second. rueidis dials a lost connection once for all its callers, with
// the deadline of the first, and the others wait for that dial whatever
// their own deadlines (mux._pipe): on one shared client, requests with a
// 2 ms deadline waited for the supervisor's one-second dial of a frozen
// Redis. rd has one connection per node, so the supervisor's ping dials
// every connection requests use (probe).
type clients struct{ rd, bg rueidis.Client }

// pending is one queued write-behind entry. The epoch and time are those of
// the Set, so an entry is never written under an epoch flushed since, and
// readers see its true age.
type pending struct {
	k       Key
	v       Value
	epoch   uint64
	created time.Time
}

// l2 is the Redis tier: signed entries under epoch-scoped keys, a breaker
// around every Redis call on the request path, a write-behind batcher and a
// supervisor that connects, follows the epoch and pings.
type l2 struct {
	t        *Tiered
	opt      rueidis.ClientOption // bg's; rd's is readerOptions(opt)
	signer   *signer
	breaker  *gobreaker.TwoStepCircuitBreaker[struct{}]
	client   atomic.Pointer[clients] // nil until connected and the epoch is known
	pingOK   atomic.Bool
	dataKey  string // KeyPrefix + "d:"
	epochKey string
	channel  string
	queue    chan pending
	refresh  chan struct{} // asks the supervisor to re-read the epoch now

	ctx       context.Context // background work; cancelled by close
	cancel    context.CancelFunc
	stopFlush chan struct{}
	flushDone chan struct{}
	wg        sync.WaitGroup

	hits, misses, errs, rejected, skipped, roundTrips atomic.Uint64
	dropped, writeSkipped, batches, entries           atomic.Uint64
	queuedBytes                                       atomic.Int64 // queued and batched entries' queuedSize, not yet written
	abandoned                                         atomic.Int64 // request-path reads given up at their deadline, still running (await)
	flushAbandoned                                    atomic.Int64 // flushes' calls given up at their deadline, still running (await); not abandoned's, which bounds reads

	rejectLog, errorLog, refusedLog logLimiter
}

// ValidateRedisURL reports whether raw is a REDIS_URL the L2 cache accepts
// (config validation uses it, so startup and the cache agree).
func ValidateRedisURL(raw string) error {
	_, err := parseRedisURL(raw)
	return err
}

// parseRedisURL turns REDIS_URL into client options. It accepts a comma
// separated host list in the authority ("redis://:pw@h1:1,h2:2/0") for a
// cluster. Errors never include the URL: it may hold a password.
func parseRedisURL(raw string) (rueidis.ClientOption, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return rueidis.ClientOption{}, errors.New("cache: REDIS_URL must start with redis://, rediss:// or unix://")
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hosts := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	list := strings.Split(hosts, ",")
	opt, err := rueidis.ParseURL(scheme + "://" + userinfo + list[0] + tail)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return opt, fmt.Errorf("cache: REDIS_URL: %w", err)
	}
	fromURL := len(opt.InitAddress) // the URL's host and its addr parameters
	for _, h := range list[1:] {
		h = strings.TrimSpace(h)
		if _, _, err := net.SplitHostPort(h); err != nil {
			return opt, fmt.Errorf("cache: REDIS_URL: cluster address #%d is not host:port", len(opt.InitAddress)+1)
		}
		opt.InitAddress = append(opt.InitAddress, h)
	}
	if scheme != "unix" {
		if err := checkNodes(scheme, list[0], opt.InitAddress, fromURL); err != nil {
			return opt, fmt.Errorf("cache: REDIS_URL: %w", err)
		}
	}
	return opt, nil
}

// checkNodes refuses node addresses the client accepts and then cannot
// dial, retried for ever (review): a port of 0 or beyond 65535, a node
// without a host. The first node's host is read from the URL (the client
// takes a missing one for localhost; REDIS_URL names its host), the
// cluster list's from their addresses; an addr parameter without a host
// gets the first node's. Nodes are named by position, never by the URL.
func checkNodes(scheme, first string, addrs []string, fromURL int) error {
	var problems []string
	if u, err := url.Parse(scheme + "://" + first); err == nil && u.Hostname() == "" {
		problems = append(problems, "node 1 has no host")
	}
	for i, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue // the client's own form, checked by its parser
		}
		if i >= fromURL && host == "" {
			problems = append(problems, fmt.Sprintf("node %d has no host", i+1))
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			problems = append(problems, fmt.Sprintf("node %d's port %q is not a TCP port (1-65535)", i+1, port))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func startL2(ctx context.Context, t *Tiered) (*l2, error) {
	opt, err := parseRedisURL(t.cfg.RedisURL)
	if err != nil {
		return nil, err
	}
	opt.DisableCache = true // L1 is our client-side cache; no CLIENT TRACKING
	// A lone command is otherwise sent synchronously, and one that times
	// out (L2_TIMEOUT, 2 ms) closes its connection, which the next reads
	// must then dial again. Pipelined, a read that times out leaves the
	// connection alone.
	opt.AlwaysPipelining = true
	opt.ClientName = "acgs-cache"
	if opt.Dialer.Timeout == 0 {
		opt.Dialer.Timeout = time.Second
	}
	if opt.ConnWriteTimeout == 0 {
		opt.ConnWriteTimeout = time.Second
	}
	// Entries are small: 64 KiB buffers instead of 0.5 MiB per connection.
	opt.ReadBufferEachConn = 64 << 10
	opt.WriteBufferEachConn = 64 << 10

	p := t.cfg.KeyPrefix
	l := &l2{
		t:         t,
		opt:       opt,
		signer:    newSigner(t.cfg.SigningKey, t.cfg.PreviousSigningKeys),
		dataKey:   p + "d:",
		epochKey:  p + "epoch",
		channel:   p + "epoch",
		queue:     make(chan pending, t.cfg.QueueSize),
		refresh:   make(chan struct{}, 1),
		stopFlush: make(chan struct{}),
		flushDone: make(chan struct{}),
	}
	l.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         "redis-l2",
		MaxRequests:  1,
		Interval:     10 * time.Second,
		BucketPeriod: time.Second,
		Timeout:      breakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= 5 || (c.Requests >= 20 && c.TotalFailures*2 >= c.Requests)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errCallerGone) || errors.Is(err, errNotAsked) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			t.log.Warn("cache: L2 circuit breaker changed state", "from", from.String(), "to", to.String())
		},
	})
	l.ctx, l.cancel = context.WithCancel(context.Background())
	ready := make(chan struct{})
	l.wg.Add(1)
	go l.supervise(ready)
	go l.flushLoop()
	select {
	case <-ready:
	case <-ctx.Done():
	case <-time.After(startupWait):
	}
	if l.client.Load() == nil {
		t.log.Warn("cache: Redis not reachable at start; serving from L1 and retrying in the background")
	}
	return l, nil
}

// supervise connects (retrying with backoff), learns the epoch, then keeps
// the epoch fresh and the health known until close. It closes ready after the
// first connection attempt, successful or not.
func (l *l2) supervise(ready chan struct{}) {
	defer l.wg.Done()
	var once sync.Once
	signal := func() { once.Do(func() { close(ready) }) }
	defer signal()

	var cs *clients
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, maxBackoff) {
		var err error
		if cs, err = l.connect(); err == nil {
			break
		}
		l.pingOK.Store(false)
		if l.errorLog.allow() {
			l.t.log.Warn("cache: cannot reach Redis; retrying", "err", err, "retry_in", backoff)
		}
		signal()
		if !sleepCtx(l.ctx, backoff) {
			return
		}
	}
	l.pingOK.Store(true)
	l.client.Store(cs)
	signal()
	l.t.log.Info("cache: L2 connected", "addrs", l.opt.InitAddress, "epoch", l.t.Epoch())

	var sub sync.WaitGroup
	sub.Add(1)
	go func() {
		defer sub.Done()
		l.subscribe(cs.bg)
	}()
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	for {
		select {
		case <-l.ctx.Done():
			sub.Wait()
			l.client.Store(nil)
			cs.rd.Close()
			cs.bg.Close()
			return
		case <-tick.C:
		case <-l.refresh:
		}
		err := l.refreshEpoch(cs.bg)
		if perr := l.probe(cs.rd); err == nil {
			err = perr
		}
		l.pingOK.Store(err == nil)
		if err != nil && l.errorLog.allow() {
			l.t.log.Warn("cache: Redis health check failed", "err", err)
		}
	}
}

// connect makes both clients and learns the epoch. Each client dials as it
// is made, with the dial timeout (a second) whatever L2_TIMEOUT is, so a
// Redis slow to handshake (TLS, a distant host) is reached.
func (l *l2) connect() (*clients, error) {
	bg, err := rueidis.NewClient(l.opt)
	if err != nil {
		return nil, err
	}
	if err = l.refreshEpoch(bg); err == nil {
		var rd rueidis.Client
		if rd, err = rueidis.NewClient(readerOptions(l.opt)); err == nil {
			return &clients{rd: rd, bg: bg}, nil
		}
	}
	bg.Close()
	return nil, err
}

// readerOptions are the options of the request path's client: one
// pipelined connection per node (rueidis otherwise spreads keyed commands
// over several, at random, which a ping would not all dial; one carries
// far more reads than L1 misses make) and its own name in CLIENT LIST.
func readerOptions(opt rueidis.ClientOption) rueidis.ClientOption {
	opt.PipelineMultiplex = -1
	opt.ClientName += "-read"
	return opt
}

// probe pings every node through the request path's client with a
// deadline long enough to dial it, and tells the breaker how Redis
// answered, so that an idle instance notices an outage and a recovery
// without traffic. A request's own deadline (L2_TIMEOUT) may be too short
// for a dial and a handshake: when the breaker has opened on requests that
// could not redial, this ping redials for them while they skip L2, and the
// breaker lets them through again once it is half-open. While the breaker
// refuses, the ping still goes out but is not recorded; it holds no request,
// since requests then skip L2, and those let through meanwhile never wait
// beyond their deadline (await).
func (l *l2) probe(rd rueidis.Client) error {
	done, berr := l.breaker.Allow()
	ctx, cancel := context.WithTimeout(l.ctx, adminTimeout)
	var err error
	for _, n := range rd.Nodes() {
		if err = n.Do(ctx, n.B().Ping().Build()).Error(); err != nil {
			break
		}
	}
	cancel()
	if berr == nil {
		done(classify(l.ctx, err))
	}
	return err
}

// subscribe follows the epoch channel. A message only triggers a re-read of
// the epoch key (the key, not the message, is the truth, so late or reordered
// messages cannot move the epoch backwards). Reconnects with backoff.
func (l *l2) subscribe(c rueidis.Client) {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, maxBackoff) {
		start := time.Now()
		err := c.Receive(l.ctx, c.B().Subscribe().Channel(l.channel).Build(), func(rueidis.PubSubMessage) {
			l.triggerRefresh()
		})
		if l.ctx.Err() != nil {
			return
		}
		if time.Since(start) > maxBackoff { // it had been working: retry soon
			backoff = 100 * time.Millisecond
		}
		l.t.log.Debug("cache: epoch subscription ended; resubscribing", "err", err)
		l.triggerRefresh() // messages may have been missed
		if !sleepCtx(l.ctx, backoff) {
			return
		}
	}
}

func (l *l2) triggerRefresh() {
	select {
	case l.refresh <- struct{}{}:
	default:
	}
}

// refreshEpoch reads the epoch (creating it if missing) and adopts it. It
// goes through bg, whatever the breaker (which guards the request path's
// reads) says: it is how the instance follows flushes and reconnects bg.
// The caller records the health only after it returned: an entry written
// before the epoch is adopted would go out under the old epoch, where no
// instance reads it.
func (l *l2) refreshEpoch(bg rueidis.Client) error {
	ctx, cancel := context.WithTimeout(l.ctx, adminTimeout)
	e, err := l.readEpoch(ctx, bg)
	cancel()
	if err != nil {
		return err
	}
	l.t.adoptEpoch(e)
	return nil
}

// epochScript reads the epoch key (KEYS[1]) and mends it: a missing key, or
// one that holds no number or a number past ARGV[3] (not a plausible
// epoch: set by hand or by an attacker, it would hold every instance there
// for good), is set to the seed ARGV[2]; a number below ARGV[1] (the
// instance's epoch: Redis restored from an older snapshot, a lagging
// replica promoted, which would make flushed entries readable again) is
// raised to it. With ARGV[4] "1" it then increments the epoch (a flush).
var epochScript = rueidis.NewLuaScript(`
local v = redis.call('GET', KEYS[1])
local cur = tonumber(v)
if v == false or cur == nil or cur > tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[2])
elseif cur < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
if ARGV[4] == '1' then
  return redis.call('INCR', KEYS[1])
end
return redis.call('GET', KEYS[1])`)

// epochArgs are epochScript's floor, seed, ceiling and increment flag. The
// floor is this instance's epoch: epochs only move forward. The seed is
// this instance's epoch too, so that a Redis that lost its data (a
// restart, an eviction) does not make every instance purge its L1 at once;
// an instance that has none yet seeds the current time in milliseconds
// rather than 0, so that a Redis that lost its data never hands out an
// epoch that was already used before. The ceiling is a day of milliseconds
// past the later of the two, plus 2^32 flushes: far below 2^53, where Lua's
// numbers stop being exact.
func (l *l2) epochArgs(incr bool) []string {
	local := l.t.epoch.Load()
	now := uint64(time.Now().UnixMilli())
	seed := local
	if seed == 0 {
		seed = now
	}
	ceiling := max(local, now) + 24*3600*1000 + 1<<32
	flag := "0"
	if incr {
		flag = "1"
	}
	return []string{strconv.FormatUint(local, 10), strconv.FormatUint(seed, 10), strconv.FormatUint(ceiling, 10), flag}
}

// readEpoch returns the epoch in Redis, mended first (epochScript).
func (l *l2) readEpoch(ctx context.Context, c rueidis.Client) (uint64, error) {
	s, err := epochScript.Exec(ctx, c, []string{l.epochKey}, l.epochArgs(false)).ToString()
	if err != nil {
		return 0, err
	}
	e, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cache: Redis key %s does not hold an epoch number", l.epochKey)
	}
	return e, nil
}

// flush increments the epoch in Redis and announces it, by ctx's deadline
// (adminTimeout without one). Its calls go through await, as the request
// path's reads do: rueidis makes a call wait for its connection's dial
// whatever the call's context, and bg's connections are redialed for
// callers without a deadline (the epoch subscription; its dial has only
// the dial timeout) or with a longer one (the supervisor's epoch read).
//
// When Redis has not answered the increment by then, flush returns
// errFlushNotConfirmed; the call goes on in the background, and its late
// answer is dropped. The increment may still land (it was sent and Redis
// is slow): this instance then adopts the new epoch at its next periodic
// read (supervise re-reads it every healthInterval, and after a lost epoch
// subscription, through refreshEpoch, which adopts any later epoch), as do
// the others; no message announces it, since this call's PUBLISH is never
// made. Until then, L2 entries of the old epoch may be read again, which
// is what the error tells the operator.
func (l *l2) flush(ctx context.Context) (uint64, error) {
	cp := l.client.Load()
	if cp == nil {
		return l.t.Epoch(), fmt.Errorf("cache: flush: %w; L1 was purged", errNotConnected)
	}
	c := cp.bg
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, adminTimeout)
		defer cancel()
	}
	if n := l.flushAbandoned.Load(); n >= maxFlushAbandoned {
		return l.t.Epoch(), fmt.Errorf("%w (%d calls of earlier flushes still wait for it); L1 was purged", errFlushNotConfirmed, n)
	}
	// Mended first (epochScript): never from 1, never below this instance.
	keys, args := []string{l.epochKey}, l.epochArgs(true)
	res, ok := await(ctx, &l.flushAbandoned, func() rueidis.RedisResult {
		return epochScript.Exec(ctx, c, keys, args)
	})
	if !ok {
		return l.t.Epoch(), fmt.Errorf("%w (%w); L1 was purged, and the flush may still take effect", errFlushNotConfirmed, ctx.Err())
	}
	if err := res.NonRedisError(); err != nil { // no answer: sent or not
		return l.t.Epoch(), fmt.Errorf("%w (%w); L1 was purged, and the flush may still take effect", errFlushNotConfirmed, err)
	}
	n, err := res.AsInt64()
	if err != nil { // Redis refused it
		return l.t.Epoch(), fmt.Errorf("cache: flush: increment epoch: %w; L1 was purged", err)
	}
	e := uint64(n)
	l.t.adoptEpoch(e)
	// PUBLISH goes on bg's first connection, the epoch subscription's.
	cmd := c.B().Publish().Channel(l.channel).Message(strconv.FormatUint(e, 10)).Build()
	err, ok = await(ctx, &l.flushAbandoned, func() error { return c.Do(ctx, cmd).Error() })
	if !ok {
		err = ctx.Err()
	}
	if err != nil {
		// Other instances still adopt the epoch at their next periodic read.
		l.t.log.Warn("cache: flush: publish epoch failed", "err", err)
	}
	return e, nil
}

// redisKey is KeyPrefix + "d:" + epoch + ":" + hex(key).
func (l *l2) redisKey(epoch uint64, k Key) string {
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], k.Hi)
	binary.BigEndian.PutUint64(raw[8:], k.Lo)
	b := make([]byte, 0, len(l.dataKey)+20+1+32)
	b = append(b, l.dataKey...)
	b = strconv.AppendUint(b, epoch, 10)
	b = append(b, ':')
	b = hex.AppendEncode(b, raw[:])
	return string(b)
}

// acquire returns the clients and a breaker ticket, or ok=false when L2 is
// not connected, the breaker is open or (for a read) too many reads given
// up are still running; then n is added to skipped.
func (l *l2) acquire(n int, skipped *atomic.Uint64, read bool) (cs *clients, done func(error), ok bool) {
	cs = l.client.Load()
	if cs == nil || read && l.abandoned.Load() >= maxAbandoned {
		skipped.Add(uint64(n))
		return nil, nil, false
	}
	done, err := l.breaker.Allow()
	if err != nil {
		skipped.Add(uint64(n))
		return nil, nil, false
	}
	return cs, done, true
}

// awaited is one call run by await.
type awaited[T any] struct {
	res   T
	state atomic.Uint32 // callRunning, then callDone or callAbandoned
	done  chan struct{} // closed once res is set
}

const (
	callRunning = iota
	callDone
	callAbandoned
)

// await runs call on a goroutine of its own and waits for it until ctx
// ends; ok=false means it gave up: the call goes on in the background and
// its result is dropped. This bounds a request's wait for Redis by its
// deadline whatever the client does inside: rueidis makes the callers of a
// connection being dialed wait for that dial, whatever their deadlines. call
// must use ctx, so that it ends soon after await gave up wherever the
// client honours it. abandoned counts the calls given up and still running.
func await[T any](ctx context.Context, abandoned *atomic.Int64, call func() T) (res T, ok bool) {
	a := &awaited[T]{done: make(chan struct{})}
	go func() {
		a.res = call()
		if !a.state.CompareAndSwap(callRunning, callDone) {
			abandoned.Add(-1)
		}
		close(a.done)
	}()
	select {
	case <-a.done:
		return a.res, true
	case <-ctx.Done():
	}
	abandoned.Add(1) // before the swap, so the goroutine's decrement follows it
	if a.state.CompareAndSwap(callRunning, callAbandoned) {
		return res, false
	}
	abandoned.Add(-1) // it finished meanwhile: take its result
	<-a.done
	return a.res, true
}

// classify maps a Redis call's error to what the breaker should record: nil
// for success or a missing key, errCallerGone when the caller's context (not
// Redis) ended the call.
func classify(parent context.Context, err error) error {
	if err == nil || rueidis.IsRedisNil(err) {
		return nil
	}
	if parent.Err() != nil {
		return errCallerGone
	}
	return err
}

// reply is the outcome of one GET.
type reply struct {
	b   []byte
	err error
}

func (l *l2) get(ctx context.Context, k Key) (Value, bool) {
	cs, done, ok := l.acquire(1, &l.skipped, true)
	if !ok {
		return Value{}, false
	}
	c := cs.rd
	epoch := l.t.epoch.Load()
	rk := l.redisKey(epoch, k)
	cmd := c.B().Get().Key(rk).Build()
	rctx, cancel := context.WithTimeout(ctx, l.t.cfg.L2Timeout)
	l.roundTrips.Add(1)
	r, ok := await(rctx, &l.abandoned, func() reply {
		b, err := c.Do(rctx, cmd).AsBytes()
		return reply{b, err}
	})
	if !ok {
		r.err = rctx.Err()
	}
	cancel()
	err := classify(ctx, r.err)
	done(err)
	return l.result(k, rk, epoch, r.b, err)
}

func (l *l2) getMany(ctx context.Context, keys []Key, misses []int, vals []Value, tiers []Tier, found []bool) {
	cs, done, ok := l.acquire(len(misses), &l.skipped, true)
	if !ok {
		return
	}
	c := cs.rd
	epoch := l.t.epoch.Load()
	rks := make([]string, len(misses))
	cmds := make(rueidis.Commands, len(misses))
	for j, i := range misses {
		rks[j] = l.redisKey(epoch, keys[i])
		cmds[j] = c.B().Get().Key(rks[j]).Build()
	}
	rctx, cancel := context.WithTimeout(ctx, batchTimeout(l.t.cfg.L2Timeout, len(misses)))
	l.roundTrips.Add(1)
	res, ok := await(rctx, &l.abandoned, func() []rueidis.RedisResult { return c.DoMulti(rctx, cmds...) })
	timedOut := rctx.Err()
	cancel()
	var first error
	for j, i := range misses {
		var b []byte
		err := timedOut
		if ok {
			b, err = res[j].AsBytes()
		}
		err = classify(ctx, err)
		if first == nil {
			first = err
		}
		if v, ok := l.result(keys[i], rks[j], epoch, b, err); ok {
			vals[i], tiers[i], found[i] = v, TierL2, true
		}
	}
	done(first)
}

// l2PerKey is what a batch read may wait for each key beyond the first,
// on top of L2Timeout: about the CPU one evaluation of a missed key costs
// at the least (the VM's decision, docs/performance.md), so waiting never
// costs more than evaluating would. One L2Timeout for a whole batch lost
// every hit of a large one when it ran over, and counted a failure toward
// the breaker: 1,000 pipelined GETs of 600-byte values took 1.1 ms at the
// median, 4.5 ms at p90 and up to 9.4 ms (rueidis DoMulti on loopback, 50
// runs, load average 3.3), against the 2 ms default.
const l2PerKey = 50 * time.Microsecond

// batchTimeout bounds a read of n keys in one round trip.
func batchTimeout(base time.Duration, n int) time.Duration {
	return base + time.Duration(max(n-1, 0))*l2PerKey
}

// result turns one GET reply into a hit or a miss: counts it, verifies the
// envelope and promotes a good entry to L1 for the rest of its life.
func (l *l2) result(k Key, rk string, epoch uint64, b []byte, err error) (Value, bool) {
	switch {
	case errors.Is(err, errCallerGone):
		return Value{}, false
	case err != nil:
		l.errs.Add(1)
		if l.errorLog.allow() {
			l.t.log.Warn("cache: L2 read failed", "err", err)
		}
		return Value{}, false
	case b == nil:
		l.misses.Add(1)
		return Value{}, false
	}
	v, created, err := l.signer.open(rk, b)
	if err != nil {
		l.rejected.Add(1)
		if l.rejectLog.allow() {
			// The value is not logged: it is untrusted and may be large.
			l.t.log.Warn("cache: L2 entry rejected", "key", rk, "reason", err, "bytes", len(b))
		}
		return Value{}, false
	}
	ttl := l.t.cfg.TTL - time.Since(created)
	if ttl <= 0 || l.t.epoch.Load() != epoch {
		l.misses.Add(1) // expired here, or flushed while we read it
		return Value{}, false
	}
	ttl = min(ttl, l.t.cfg.TTL) // a writer's clock ahead of ours must not extend it
	l.t.l1.Set(k, l1Entry{v: l.t.values.intern(v), ttl: ttl})
	if l.t.epoch.Load() != epoch { // a flush raced with the promotion
		l.t.l1.Invalidate(k)
	}
	l.hits.Add(1)
	return v, true
}

// enqueue queues v for the write-behind, or drops it (counted) when the
// queue is full in entries or bytes. Set gives v its JSON alone.
func (l *l2) enqueue(k Key, v Value) {
	n := queuedSize(v)
	if l.queuedBytes.Add(n) > maxQueuedBytes {
		l.queuedBytes.Add(-n)
		l.dropped.Add(1)
		return
	}
	select {
	case l.queue <- pending{k: k, v: v, epoch: l.t.epoch.Load(), created: time.Now()}:
	default:
		l.queuedBytes.Add(-n)
		l.dropped.Add(1)
	}
}

// maxQueuedBytes bounds the memory of the write-behind queue, which is
// otherwise bounded in entries only (QueueSize): with a slow Redis and
// large decisions (up to MaxEntryBytes each) the 10,000 entries of the
// default could hold 640 MiB. 32 MiB is 10,000 entries of about 3 KiB,
// several times the constitution's decisions.
const maxQueuedBytes = 32 << 20

// queuedSize is what an entry counts toward maxQueuedBytes: its JSON and
// the rest of the entry (Set queues no decoded result).
func queuedSize(v Value) int64 { return int64(len(v.JSON)) + 128 }

// flushLoop is the one write-behind goroutine: it sends a pipeline when
// BatchSize entries are queued or BatchWindow after the first one, and on
// close drains the queue.
func (l *l2) flushLoop() {
	defer close(l.flushDone)
	size := l.t.cfg.BatchSize
	batch := make([]pending, 0, size)
	window := time.NewTimer(time.Hour)
	window.Stop()
	for {
		select {
		case p := <-l.queue:
			batch = append(batch, p)
		case <-l.stopFlush:
			l.drain(batch)
			return
		}
		window.Reset(l.t.cfg.BatchWindow)
	collect:
		for len(batch) < size {
			select {
			case p := <-l.queue:
				batch = append(batch, p)
			case <-window.C:
				break collect
			case <-l.stopFlush:
				window.Stop()
				l.drain(batch)
				return
			}
		}
		window.Stop()
		l.write(batch)
		batch = batch[:0]
	}
}

// drain writes batch and everything still queued, in batches, until the queue
// is empty or closeTimeout has passed.
func (l *l2) drain(batch []pending) {
	deadline := time.Now().Add(closeTimeout)
	for time.Now().Before(deadline) {
	fill:
		for len(batch) < l.t.cfg.BatchSize {
			select {
			case p := <-l.queue:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			return
		}
		l.write(batch)
		batch = batch[:0]
	}
}

// write sends one pipeline of SET key envelope PX remaining-ttl.
func (l *l2) write(batch []pending) {
	defer func() { // held until written: the pipeline refers to them
		for _, p := range batch {
			l.queuedBytes.Add(-queuedSize(p.v))
		}
	}()
	cs, done, ok := l.acquire(len(batch), &l.writeSkipped, false)
	if !ok {
		return
	}
	c := cs.bg
	cur := l.t.epoch.Load()
	cmds := make(rueidis.Commands, 0, len(batch))
	for _, p := range batch {
		ttl := l.t.cfg.TTL - time.Since(p.created)
		if p.epoch != cur || ttl < time.Millisecond {
			l.writeSkipped.Add(1) // flushed since, or already expired
			continue
		}
		rk := l.redisKey(p.epoch, p.k)
		env, err := l.signer.seal(rk, p.v, p.created)
		if err != nil {
			l.writeSkipped.Add(1)
			l.t.log.Warn("cache: L2 write skipped", "err", err)
			continue
		}
		cmds = append(cmds, c.B().Set().Key(rk).Value(rueidis.BinaryString(env)).PxMilliseconds(ttl.Milliseconds()).Build())
	}
	if len(cmds) == 0 {
		done(errNotAsked)
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, flushTimeout)
	res := c.DoMulti(ctx, cmds...)
	cancel()
	// An error reply (OOM under noeviction, READONLY from a replica,
	// NOPERM from an ACL) is Redis answering: it is counted and logged but
	// not a failure to the breaker, which guards reads, and reads of what
	// Redis holds go on. Only a failure to get an answer (a network error,
	// a timeout) counts.
	var failed, refused error
	written := 0
	for _, r := range res {
		err := r.Error()
		if err == nil {
			written++
			continue
		}
		l.errs.Add(1)
		if _, ok := rueidis.IsRedisErr(err); ok {
			refused = cmp.Or(refused, err)
		} else {
			failed = cmp.Or(failed, err)
		}
	}
	done(classify(l.ctx, failed))
	if written > 0 { // batches and OnFlush count what reached Redis
		l.entries.Add(uint64(written))
		l.batches.Add(1)
		if l.t.cfg.OnFlush != nil {
			l.t.cfg.OnFlush(written)
		}
	}
	if failed != nil && l.errorLog.allow() {
		l.t.log.Warn("cache: L2 write failed", "err", failed, "entries", len(cmds))
	}
	if refused != nil && l.refusedLog.allow() {
		l.t.log.Warn("cache: Redis refused L2 writes", "err", refused, "entries", len(cmds))
	}
}

func (l *l2) stats(s *Stats) {
	state := l.breaker.State()
	connected := l.client.Load() != nil
	s.L2Enabled = true
	s.L2Healthy = connected && state == gobreaker.StateClosed && l.pingOK.Load()
	s.BreakerState = state.String()
	s.L2Hits = l.hits.Load()
	s.L2Misses = l.misses.Load()
	s.L2Errors = l.errs.Load()
	s.L2Rejected = l.rejected.Load()
	s.L2Skipped = l.skipped.Load()
	s.L2RoundTrips = l.roundTrips.Load()
	s.WriteQueueLen = len(l.queue)
	s.WriteQueueCap = cap(l.queue)
	s.WriteDropped = l.dropped.Load()
	s.WriteSkipped = l.writeSkipped.Load()
	s.WriteBatches = l.batches.Load()
	s.WriteEntries = l.entries.Load()
}

// close drains the write-behind queue (bounded), then stops the background
// goroutines and closes the client.
func (l *l2) close() {
	close(l.stopFlush)
	select {
	case <-l.flushDone:
	case <-time.After(closeTimeout + flushTimeout):
		l.t.log.Warn("cache: close: pending L2 writes abandoned")
	}
	l.cancel()
	l.wg.Wait()
}

// sleepCtx sleeps for d or until ctx ends; it reports whether ctx is alive.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// logLimiter lets one warning of a kind through per second, so a flood of
// bad entries or a Redis outage cannot flood the log.
type logLimiter struct{ next atomic.Int64 }

func (g *logLimiter) allow() bool {
	now := time.Now().UnixNano()
	next := g.next.Load()
	return now >= next && g.next.CompareAndSwap(next, now+int64(time.Second))
}
