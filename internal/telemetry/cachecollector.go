package telemetry

import (
	"sync/atomic"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/prometheus/client_golang/prometheus"
)

// Breaker states as acgs_cache_l2_breaker_state reports them: a number, so
// that an alert or a panel can compare it (> 0 means not closed).
const (
	breakerClosed   = 0
	breakerHalfOpen = 1
	breakerOpen     = 2
)

// cacheCollector turns a cache.Stats snapshot into metrics at scrape time.
// Reading the cache's own counters at scrape time, instead of incrementing
// Prometheus counters on every lookup, keeps the L1 hit path free of any
// metrics work: the cache counts anyway for health, so it is counted once.
type cacheCollector struct {
	stats atomic.Pointer[func() cache.Stats]

	hits, misses          *prometheus.Desc
	l1Entries, l1Capacity *prometheus.Desc
	l1Evictions           *prometheus.Desc
	l2Errors, l2Rejected  *prometheus.Desc
	l2RoundTrips          *prometheus.Desc
	l2Skipped             *prometheus.Desc
	l2Enabled, l2Up       *prometheus.Desc
	breakerState          *prometheus.Desc
	queueEntries          *prometheus.Desc
	queueCapacity         *prometheus.Desc
	writeDropped          *prometheus.Desc
	writeSkipped          *prometheus.Desc
	oversize              *prometheus.Desc
	writeBatches          *prometheus.Desc
	writeEntries          *prometheus.Desc
	epoch                 *prometheus.Desc
}

func newCacheCollector() *cacheCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &cacheCollector{
		hits:          d("acgs_cache_hits_total", "Decision cache lookups answered, by tier (l1, l2). A request counts one L1 lookup, when its decision is known: an L1 hit when L1 answered it, also by the second look a miss takes before it evaluates (so an L1 hit may follow an L2 read).", "tier"),
		misses:        d("acgs_cache_misses_total", "Decision cache lookups not answered, by tier (l1, l2). An L1 miss is looked up in L2 when L2 is connected and its circuit breaker lets it; the others are counted in acgs_cache_l2_skipped_total. L2 lookups can exceed L1 misses by the requests a second look in L1 then answered (counted L1 hits).", "tier"),
		l1Entries:     d("acgs_cache_l1_entries", "Decisions held in the in-process L1 cache."),
		l1Capacity:    d("acgs_cache_l1_capacity_entries", "Maximum number of decisions the L1 cache holds."),
		l1Evictions:   d("acgs_cache_l1_evictions_total", "Decisions evicted from L1 for size or expiry."),
		l2Errors:      d("acgs_cache_l2_errors_total", "Redis errors and timeouts on L2 reads and writes."),
		l2Rejected:    d("acgs_cache_l2_rejected_total", "L2 entries rejected because their signature or encoding did not check."),
		l2RoundTrips:  d("acgs_cache_l2_roundtrips_total", "Read round trips to Redis; a pipelined multi-key read counts once."),
		l2Skipped:     d("acgs_cache_l2_skipped_total", "L1 misses not looked up in L2: Redis not connected, the circuit breaker open, or too many reads given up at their deadline still running."),
		l2Enabled:     d("acgs_cache_l2_enabled", "1 when an L2 (Redis) cache is configured, else 0."),
		l2Up:          d("acgs_cache_l2_up", "1 when the configured L2 cache answers, 0 when it is down; absent when L2 is not configured."),
		breakerState:  d("acgs_cache_l2_breaker_state", "State of the circuit breaker around L2: 0 closed, 1 half-open, 2 open; absent when L2 is not configured."),
		queueEntries:  d("acgs_cache_write_queue_entries", "Decisions waiting in the write-behind queue to be written to L2."),
		queueCapacity: d("acgs_cache_write_queue_capacity_entries", "Capacity of the write-behind queue."),
		writeDropped:  d("acgs_cache_write_dropped_total", "Write-behind entries dropped because the queue was full."),
		writeSkipped:  d("acgs_cache_write_skipped_total", "Write-behind entries taken from the queue but not written to L2: Redis not connected or the circuit breaker open, the cache flushed since, or the entry expired."),
		oversize:      d("acgs_cache_oversize_total", "Decisions answered but not cached: their JSON is over the cache's entry bound (64 KiB), or cannot be made."),
		writeBatches:  d("acgs_cache_l2_write_batches_total", "Write-behind pipelines that wrote at least one decision to L2."),
		writeEntries:  d("acgs_cache_l2_written_entries_total", "Decisions written to L2 by the write-behind batcher."),
		epoch:         d("acgs_cache_epoch", "Cache epoch; it is bumped when the cache is emptied, so older L2 entries are no longer read."),
	}
}

// Describe implements prometheus.Collector.
func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.hits, c.misses, c.l1Entries, c.l1Capacity, c.l1Evictions,
		c.l2Errors, c.l2Rejected, c.l2RoundTrips, c.l2Skipped, c.l2Enabled, c.l2Up,
		c.breakerState, c.queueEntries, c.queueCapacity, c.writeDropped, c.writeSkipped, c.oversize,
		c.writeBatches, c.writeEntries, c.epoch,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one call of the stats function per
// scrape, so all cache series of a scrape come from the same snapshot.
func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	fp := c.stats.Load()
	if fp == nil {
		return
	}
	s := (*fp)()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.hits, s.L1Hits, "l1")
	counter(c.hits, s.L2Hits, "l2")
	counter(c.misses, s.L1Misses, "l1")
	counter(c.misses, s.L2Misses, "l2")
	gauge(c.l1Entries, float64(s.L1Entries))
	gauge(c.l1Capacity, float64(s.L1Capacity))
	counter(c.l1Evictions, s.L1Evictions)
	counter(c.l2Errors, s.L2Errors)
	counter(c.l2Rejected, s.L2Rejected)
	counter(c.l2RoundTrips, s.L2RoundTrips)
	counter(c.l2Skipped, s.L2Skipped)
	gauge(c.l2Enabled, boolFloat(s.L2Enabled))
	if s.L2Enabled {
		// Absent rather than 0 without L2, so that "acgs_cache_l2_up == 0"
		// alerts only when an L2 that should be there is down.
		gauge(c.l2Up, boolFloat(s.L2Healthy))
		if v, ok := breakerValue(s.BreakerState); ok {
			gauge(c.breakerState, v)
		}
	}
	gauge(c.queueEntries, float64(s.WriteQueueLen))
	gauge(c.queueCapacity, float64(s.WriteQueueCap))
	counter(c.writeDropped, s.WriteDropped)
	counter(c.writeSkipped, s.WriteSkipped)
	counter(c.oversize, s.Oversize)
	counter(c.writeBatches, s.WriteBatches)
	counter(c.writeEntries, s.WriteEntries)
	gauge(c.epoch, float64(s.Epoch))
}

// breakerValue maps cache.Stats.BreakerState to the gauge's number; an
// unknown or "disabled" state yields no sample.
func breakerValue(state string) (float64, bool) {
	switch state {
	case "closed":
		return breakerClosed, true
	case "half-open", "half_open", "halfopen":
		return breakerHalfOpen, true
	case "open":
		return breakerOpen, true
	}
	return 0, false
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// RegisterCacheStats exposes the cache counters through f, which is called
// once per scrape. A later call replaces f (for a cache rebuilt at run time)
// instead of registering a second collector, which the registry would refuse.
func (m *Metrics) RegisterCacheStats(f func() cache.Stats) {
	m.cacheOnce.Do(func() {
		m.cache = newCacheCollector()
		m.reg.MustRegister(m.cache)
	})
	if f == nil {
		m.cache.stats.Store(nil)
		return
	}
	m.cache.stats.Store(&f)
}
