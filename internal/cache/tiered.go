package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// Defaults of Config, applied to zero fields.
const (
	DefaultL1Size      = 10000
	DefaultTTL         = 300 * time.Second
	DefaultL2Timeout   = 2 * time.Millisecond
	DefaultBatchSize   = 10
	DefaultBatchWindow = 5 * time.Millisecond
	DefaultQueueSize   = 10000
	DefaultKeyPrefix   = "acgs:"
	// MinSigningKeyLen is the shortest CACHE_SIGNING_KEY accepted: an HMAC-SHA256
	// key shorter than the hash output weakens it.
	MinSigningKeyLen = 32
)

// l1ClockResolution is the precision of L1 expiry.
const l1ClockResolution = 10 * time.Millisecond

// Config configures a Tiered cache. Zero fields take the defaults above; the
// environment variable each field comes from is named in its comment.
type Config struct {
	L1Size int           // L1_CACHE_SIZE: entries kept in process
	TTL    time.Duration // DEFAULT_CACHE_TTL: life of an entry in L1 and L2
	// RedisURL (REDIS_URL) enables L2; empty means L1 only. redis:// or
	// rediss:// (TLS), user and password in the URL, db as path or ?db=.
	// Several hosts separated by commas ("redis://:pw@h1:7000,h2:7001") give a
	// cluster; one host is probed and used as cluster or single node.
	RedisURL string
	// SigningKey (CACHE_SIGNING_KEY) signs L2 entries with HMAC-SHA256.
	// Required with RedisURL, at least MinSigningKeyLen bytes.
	SigningKey []byte
	// PreviousSigningKeys still verify (never sign) during a key rotation.
	PreviousSigningKeys [][]byte
	L2Timeout           time.Duration // L2_TIMEOUT: deadline of every L2 read
	BatchSize           int           // BATCH_SIZE: max entries per write-behind pipeline
	BatchWindow         time.Duration // BATCH_WINDOW: max wait before a partial batch is flushed
	QueueSize           int           // write-behind queue bound; a full queue drops and counts
	KeyPrefix           string        // prefix of every Redis key and channel
	Logger              *slog.Logger  // nil means slog.Default()
	// OnFlush, when set, is called from the write-behind goroutine with the
	// number of entries each pipeline wrote to Redis (for a batch-size
	// histogram); a pipeline that wrote none (every SET failed) is not
	// reported, as it is not counted in Stats.WriteBatches.
	OnFlush func(n int)
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.L1Size == 0 {
		c.L1Size = DefaultL1Size
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.L2Timeout == 0 {
		c.L2Timeout = DefaultL2Timeout
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchWindow == 0 {
		c.BatchWindow = DefaultBatchWindow
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first configuration error, naming the environment
// variable to fix. Zero fields are valid (they take defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.L1Size < 0:
		return fmt.Errorf("cache: L1_CACHE_SIZE must be positive, got %d", c.L1Size)
	case c.TTL < 0:
		return fmt.Errorf("cache: DEFAULT_CACHE_TTL must be positive, got %s", c.TTL)
	case c.L2Timeout < 0:
		return fmt.Errorf("cache: L2_TIMEOUT must be positive, got %s", c.L2Timeout)
	case c.BatchSize < 0:
		return fmt.Errorf("cache: BATCH_SIZE must be positive, got %d", c.BatchSize)
	case c.BatchWindow < 0:
		return fmt.Errorf("cache: BATCH_WINDOW must be positive, got %s", c.BatchWindow)
	case c.QueueSize < 0:
		return fmt.Errorf("cache: write-behind queue size must be positive, got %d", c.QueueSize)
	}
	if c.RedisURL == "" {
		return nil
	}
	if len(c.SigningKey) == 0 {
		return errors.New("cache: CACHE_SIGNING_KEY is required when REDIS_URL is set (it signs shared L2 entries)")
	}
	if len(c.SigningKey) < MinSigningKeyLen {
		return fmt.Errorf("cache: CACHE_SIGNING_KEY must be at least %d bytes, got %d", MinSigningKeyLen, len(c.SigningKey))
	}
	for i, k := range c.PreviousSigningKeys {
		if len(k) < MinSigningKeyLen {
			return fmt.Errorf("cache: previous CACHE_SIGNING_KEY #%d must be at least %d bytes, got %d", i+1, MinSigningKeyLen, len(k))
		}
	}
	if _, err := parseRedisURL(c.RedisURL); err != nil {
		return err
	}
	return nil
}

// l1Entry is what L1 stores: the value in its stored form (see interner),
// shared with every other entry whose decision is alike, and how long it may
// live, which is shorter than TTL for an entry promoted from L2.
type l1Entry struct {
	v   *stored
	ttl time.Duration
}

// counter is an atomic counter alone on its cache line, for the counters every
// request touches, so concurrent requests do not contend on a shared line.
type counter struct {
	atomic.Uint64
	_ [56]byte
}

// Tiered is the decision cache: L1 in process, then L2 in Redis when
// configured. All methods are safe for concurrent use. Redis being slow,
// frozen or down never fails or blocks a request beyond L2Timeout (a batch:
// its batchTimeout), whatever the Redis client does meanwhile, redials
// included: L2 is skipped.
type Tiered struct {
	cfg   Config
	log   *slog.Logger
	l1    *otter.Cache[Key, l1Entry]
	clock *otter.CoarseClock
	// values holds one stored Value per distinct decision in L1.
	values *interner
	// epoch scopes L2 keys; applied is the epoch whose L1 purge has finished,
	// what Epoch reports. adoptMu orders concurrent adoptions.
	epoch, applied atomic.Uint64
	adoptMu        sync.Mutex
	closed         atomic.Bool
	once           sync.Once

	l1Hits, l1Misses counter
	l1Evictions      atomic.Uint64
	oversize         atomic.Uint64

	l2 *l2 // nil without RedisURL
}

// New builds the cache. Only bad configuration is an error: with Redis
// configured but unreachable it starts degraded (L1 only) and keeps trying to
// connect in the background. ctx bounds the wait for the first connection.
func New(ctx context.Context, cfg Config) (*Tiered, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// A coarse clock makes an L1 read cost an atomic load instead of a clock
	// read (about a tenth of a hit); TTLs are minutes, so 10ms precision is plenty.
	t := &Tiered{cfg: cfg, log: cfg.Logger, clock: otter.NewCoarseClock(l1ClockResolution), values: newInterner()}
	l1, err := otter.New(&otter.Options[Key, l1Entry]{
		MaximumSize:     cfg.L1Size,
		InitialCapacity: min(cfg.L1Size, 1024),
		Clock:           t.clock,
		// Run maintenance on the caller instead of a new goroutine per drain of
		// the read buffer: measured 500 → 120 ns of CPU per hit. Safe here because
		// nothing of ours runs under otter's locks except an atomic add.
		Executor: func(fn func()) { fn() },
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[Key, l1Entry]) time.Duration {
			return e.Value.ttl
		}),
		OnAtomicDeletion: func(e otter.DeletionEvent[Key, l1Entry]) {
			if e.WasEvicted() {
				t.l1Evictions.Add(1)
			}
		},
	})
	if err != nil {
		t.clock.Stop()
		return nil, fmt.Errorf("cache: build L1: %w", err)
	}
	t.l1 = l1
	if cfg.RedisURL != "" {
		if t.l2, err = startL2(ctx, t); err != nil {
			t.l1.StopAllGoroutines()
			t.clock.Stop()
			return nil, err
		}
	}
	return t, nil
}

// Lookup looks k up in L1, then in L2. An L2 hit has a verified signature
// and is promoted to L1. It never returns an error: any L2 failure is a
// miss. It does not count the L1 hit or miss (L2's counters count): its
// caller may yet answer a miss from L1 (PeekValue) and counts the request's
// outcome once, when it is known, with CountL1.
func (t *Tiered) Lookup(ctx context.Context, k Key) (Value, Tier, bool) {
	if e, ok := t.l1.GetIfPresent(k); ok {
		return t.values.value(e.v), TierL1, true
	}
	if t.l2 == nil {
		return Value{}, TierNone, false
	}
	if v, ok := t.l2.get(ctx, k); ok {
		return v, TierL2, true
	}
	return Value{}, TierNone, false
}

// Peek looks k up in L1 only, counting nothing, hit or miss: for a look in
// L1 whose outcome its caller counts with CountL1 (the engine's Lookup of
// a raw-body tier entry), or that is not a lookup of its own. The value's
// Result is nil unless L1 holds it decoded (JSON is set for every defined
// decision), so a cold entry is not decoded for a caller that needs only
// its JSON.
func (t *Tiered) Peek(k Key) (Value, bool) {
	if e, ok := t.l1.GetIfPresent(k); ok {
		return t.values.encoded(e.v), true
	}
	return Value{}, false
}

// PeekValue is Peek with the value decoded: a cold entry's Result is
// decoded for this caller alone (decodeStored), not kept and not offered to
// the hot set, and nothing is counted. For a look in L1 that is not a lookup
// of its own but whose caller needs the value (the engine's miss looking
// again before it evaluates).
func (t *Tiered) PeekValue(k Key) (Value, bool) {
	if e, ok := t.l1.GetIfPresent(k); ok {
		return t.values.decoded(e.v), true
	}
	return Value{}, false
}

// CountL1 counts L1 lookups made through Lookup, LookupMany, Peek or
// PeekValue: hits answered from L1, misses not.
func (t *Tiered) CountL1(hits, misses uint64) {
	if hits > 0 {
		t.l1Hits.Add(hits)
	}
	if misses > 0 {
		t.l1Misses.Add(misses)
	}
}

// LookupMany looks up keys[i] into vals[i], tiers[i], found[i]: L1 for all,
// then one L2 round trip for all L1 misses. The four slices must have equal
// length. It counts no L1 hit or miss, as Lookup.
func (t *Tiered) LookupMany(ctx context.Context, keys []Key, vals []Value, tiers []Tier, found []bool) {
	if len(vals) != len(keys) || len(tiers) != len(keys) || len(found) != len(keys) {
		panic("cache: LookupMany needs vals, tiers and found as long as keys")
	}
	var misses []int
	for i, k := range keys {
		if e, ok := t.l1.GetIfPresent(k); ok {
			vals[i], tiers[i], found[i] = t.values.value(e.v), TierL1, true
			continue
		}
		vals[i], tiers[i], found[i] = Value{}, TierNone, false
		misses = append(misses, i)
	}
	if t.l2 != nil && len(misses) > 0 {
		t.l2.getMany(ctx, keys, misses, vals, tiers, found)
	}
}

// Set stores v under k in L1 now and queues it for L2. It never blocks: when
// the write-behind queue is full the L2 write is dropped and counted. A
// value whose JSON is over MaxEntryBytes is not stored (counted). A value
// without its JSON (the engine gives every defined decision's) is bounded
// by its result's encoding, made here, and not stored when that fails.
func (t *Tiered) Set(k Key, v Value) {
	enc := v.JSON
	if enc == nil && v.Result != nil {
		var err error
		if enc, err = json.Marshal(v.Result); err != nil {
			t.oversize.Add(1)
			return
		}
	}
	if len(enc) > MaxEntryBytes {
		t.oversize.Add(1)
		return
	}
	t.l1.Set(k, l1Entry{v: t.values.intern(v), ttl: t.cfg.TTL})
	if t.l2 != nil && !t.closed.Load() {
		// The L2 write needs the JSON alone (seal): the decoded result,
		// several times larger, is not kept in the queue.
		t.l2.enqueue(k, Value{Defined: v.Defined, JSON: enc})
	}
}

// Purge empties L1, for a new policy revision. L2 needs no purge: the
// revision is part of every key, so old entries are never read again.
func (t *Tiered) Purge() { t.purgeL1() }

// purgeL1 empties L1 and drops the decoded values kept for it.
func (t *Tiered) purgeL1() {
	t.l1.InvalidateAll()
	t.values.hot.clear()
}

// Flush empties the cache for every instance (DELETE /v1/cache): it purges L1,
// increments the epoch in Redis (which is part of every L2 key, so older
// entries are no longer read) and publishes it so that other instances purge
// their L1 too. Without L2 it bumps a local epoch. With L2 configured but
// unreachable, L1 is purged and an error is returned. It returns by ctx's
// deadline (a second without one): when Redis has not answered the
// increment by then, L1 is purged and an error says the flush was not
// confirmed (errFlushNotConfirmed); the increment may still take effect,
// and every instance then adopts it (l2.flush).
func (t *Tiered) Flush(ctx context.Context) (uint64, error) {
	if t.l2 == nil {
		t.adoptMu.Lock()
		defer t.adoptMu.Unlock()
		e := t.epoch.Add(1)
		t.purgeL1()
		t.applied.Store(e)
		return e, nil
	}
	t.purgeL1()
	return t.l2.flush(ctx)
}

// Epoch returns the cache epoch this instance reads and writes L2 under.
// Once it reports an epoch, L1 holds nothing from earlier epochs.
func (t *Tiered) Epoch() uint64 { return t.applied.Load() }

// adoptEpoch switches to epoch e (read from Redis); a change purges L1 because
// entries promoted under the old epoch may have been flushed elsewhere. The
// L2 epoch moves first, so a promotion racing with the purge either is purged
// or sees the new epoch and drops its entry (see l2.result).
func (t *Tiered) adoptEpoch(e uint64) {
	t.adoptMu.Lock()
	defer t.adoptMu.Unlock()
	if e < t.epoch.Load() {
		return // epochs only move forward (l2.refreshEpoch sets Redis back)
	}
	if old := t.epoch.Swap(e); old != e {
		t.purgeL1()
		t.log.Info("cache: epoch changed, L1 purged", "from", old, "to", e)
	}
	t.applied.Store(e)
}

// Stats returns the current counters.
func (t *Tiered) Stats() Stats {
	s := Stats{
		L1Hits:       t.l1Hits.Load(),
		L1Misses:     t.l1Misses.Load(),
		L1Entries:    t.l1.EstimatedSize(),
		L1Capacity:   t.cfg.L1Size,
		L1Evictions:  t.l1Evictions.Load(),
		Oversize:     t.oversize.Load(),
		BreakerState: "disabled",
		Epoch:        t.applied.Load(),
	}
	if t.l2 != nil {
		t.l2.stats(&s)
	}
	return s
}

// Close flushes the pending L2 writes (waiting a bounded time), then closes
// the Redis client. The cache must not be used afterwards.
func (t *Tiered) Close() error {
	t.once.Do(func() {
		t.closed.Store(true)
		if t.l2 != nil {
			t.l2.close()
		}
		t.l1.StopAllGoroutines()
		t.clock.Stop()
	})
	return nil
}
