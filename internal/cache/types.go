// Package cache holds the decision cache: the canonical 128-bit key, the
// in-process L1 (otter), the shared L2 (Redis through rueidis) with signed
// entries, the write-behind batcher and the circuit breaker around L2.
// It stores decisions; it never evaluates policy and never decides whether a
// decision may be cached (the engine does).
package cache

// Key is the 128-bit key of one decision: SHA-256, truncated to 128 bits,
// of the revision, path and canonical encoding of the input (Sum; XXH3
// until 2026-12-05, see finishKey).
type Key struct{ Hi, Lo uint64 }

// Tier says where a cached decision came from.
type Tier uint8

const (
	// TierNone means no cache answered.
	TierNone Tier = iota
	// TierL1 is the in-process cache.
	TierL1
	// TierL2 is the shared Redis cache.
	TierL2
)

// String returns the API name of the tier: none, l1 or l2.
func (t Tier) String() string {
	switch t {
	case TierL1:
		return "l1"
	case TierL2:
		return "l2"
	default:
		return "none"
	}
}

// MaxEntryBytes bounds the JSON of a cached decision. L1 is bounded in
// entries; a policy that echoes part of its input (the constitution's
// evaluation_details.action_category) would let a client make each entry
// as large as a request (1 MiB), ten thousand of them gigabytes. A larger
// decision is answered, not cached. The constitution's are about 1 KB.
const MaxEntryBytes = 64 << 10

// Value is one cached decision. Result is the policy value as decoded JSON
// (map[string]any, []any, string, json.Number, bool, nil); it is shared between
// readers and must be treated as immutable.
type Value struct {
	Result  any
	Defined bool
	// JSON is Result encoded as JSON, when the writer had it: responses are
	// written from it without encoding the result again on every hit.
	JSON []byte
}

// Stats is a point-in-time view of the cache counters for metrics and health.
type Stats struct {
	L1Hits, L1Misses uint64
	L2Hits, L2Misses uint64
	L2Errors         uint64 // Redis errors and timeouts on reads and writes
	L2Rejected       uint64 // entries that failed signature or decoding checks
	L2Skipped        uint64 // L1 misses not looked up in L2: not connected, breaker open, or too many reads given up still running
	L1Entries        int
	L1Capacity       int
	L1Evictions      uint64
	Oversize         uint64 // decisions not cached: their JSON is over MaxEntryBytes, or they have none and their result cannot be encoded
	WriteQueueLen    int
	WriteQueueCap    int
	WriteDropped     uint64 // write-behind entries dropped because the queue was full
	WriteSkipped     uint64 // dequeued entries not written: L2 unavailable, epoch flushed or expired
	WriteBatches     uint64 // write-behind pipelines that wrote at least one entry to Redis
	WriteEntries     uint64 // entries written to Redis
	L2RoundTrips     uint64 // read round trips to Redis (an MGET of many keys counts once)
	BreakerState     string // "closed", "half-open", "open"; "disabled" without L2
	L2Enabled        bool
	L2Healthy        bool
	Epoch            uint64
}
