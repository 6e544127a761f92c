package telemetry

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/acgs-lite/acgs/internal/admission"
)

// admissionCollector turns an admission.Stats snapshot into gauges and
// counters at scrape time, so that taking and releasing a slot does no
// metrics work.
type admissionCollector struct {
	stats atomic.Pointer[func() admission.Stats]

	inFlight, waiting, maxInFlight, maxQueue *prometheus.Desc
	admitted, queued, refused, abandoned     *prometheus.Desc
	canceled                                 *prometheus.Desc
}

func newAdmissionCollector() *admissionCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &admissionCollector{
		inFlight:    d("acgs_admission_in_flight", "Policy evaluations running now (each holds an admission slot)."),
		waiting:     d("acgs_admission_waiting", "Requests waiting for an admission slot now."),
		maxInFlight: d("acgs_admission_max_in_flight", "Admission slots: evaluations allowed at once (ADMISSION_MAX_IN_FLIGHT)."),
		maxQueue:    d("acgs_admission_max_queue", "Requests allowed to wait for a slot (ADMISSION_MAX_QUEUE)."),
		admitted:    d("acgs_admission_admitted_total", "Evaluations admitted (a shared single-flight evaluation counts once)."),
		queued:      d("acgs_admission_queued_total", "Evaluations that had to wait for a slot, admitted or not."),
		refused: d("acgs_admission_refused_total", "Evaluations refused a slot, by reason: queue_full (displaced from a full queue by a newer request), "+
			"queue_timeout (ADMISSION_QUEUE_TIMEOUT passed), deadline (the request's deadline passed while it waited). A refused shared evaluation counts once; acgs_decisions_shed_total counts the requests.", "reason"),
		canceled:  d("acgs_admission_canceled_total", "Evaluations whose request was cancelled (its client went away) while they waited for a slot: not refused, not counted in acgs_admission_refused_total."),
		abandoned: d("acgs_admission_abandoned_total", "Evaluations admitted whose request's deadline passed (or which were cancelled) while they ran: the request was answered overloaded, the evaluation ran to its end on its slot. Counted in acgs_admission_admitted_total, not as refused."),
	}
}

// Describe implements prometheus.Collector.
func (c *admissionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.inFlight, c.waiting, c.maxInFlight, c.maxQueue, c.admitted, c.queued, c.refused, c.abandoned, c.canceled} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *admissionCollector) Collect(ch chan<- prometheus.Metric) {
	fp := c.stats.Load()
	if fp == nil {
		return
	}
	s := (*fp)()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.inFlight, s.InFlight)
	gauge(c.waiting, s.Waiting)
	gauge(c.maxInFlight, s.MaxInFlight)
	gauge(c.maxQueue, s.MaxQueue)
	counter(c.admitted, s.Admitted)
	counter(c.queued, s.Queued)
	counter(c.refused, s.QueueFull, "queue_full")
	counter(c.refused, s.Timeout, "queue_timeout")
	counter(c.refused, s.Deadline, "deadline")
	counter(c.abandoned, s.Abandoned)
	counter(c.canceled, s.Canceled)
}

// RegisterAdmission exposes the admission controller's state through f,
// called once per scrape; a later call replaces f.
func (m *Metrics) RegisterAdmission(f func() admission.Stats) {
	m.admissionOnce.Do(func() {
		m.admission = newAdmissionCollector()
		m.reg.MustRegister(m.admission)
	})
	if f == nil {
		m.admission.stats.Store(nil)
		return
	}
	m.admission.stats.Store(&f)
}
