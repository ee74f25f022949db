package ambassador

import (
	"net/http"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sony/gobreaker/v2"
)

// The ambassador's Prometheus metrics, on a registry of its own. The
// breaker's state is read on each scrape; calls, transitions and bytes are
// counted as they happen. Every label takes a handful of values.

// metrics holds the ambassador's registry and its event metrics.
type metrics struct {
	reg         *prometheus.Registry
	grpc        *grpcprom.ServerMetrics
	transitions *prometheus.CounterVec
	calls       *prometheus.CounterVec
	forwarded   *prometheus.CounterVec
}

// The outcomes of framefarm_ambassador_calls_total, as the breaker sees a
// call.
const (
	outcomeOK       = "ok"       // the coordinator answered yes
	outcomeRefused  = "refused"  // the coordinator answered no (about the request): not the link's failure
	outcomeFailed   = "failed"   // the link failed (counts against the breaker)
	outcomeRejected = "rejected" // the breaker did not let the call through
	outcomeExcluded = "excluded" // the node cancelled it, or a heartbeat timed out: not counted
)

// The streams of framefarm_ambassador_forwarded_bytes_total.
const (
	streamFrames = "frames" // coordinator to node
	streamParts  = "parts"  // node to coordinator
)

func newMetrics(a *Ambassador) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg:  reg,
		grpc: grpcprom.NewServerMetrics(),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "framefarm_ambassador_breaker_transitions_total",
			Help: "Circuit breaker state changes, by the state left and the state entered."}, []string{"from", "to"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "framefarm_ambassador_calls_total",
			Help: "Node calls forwarded to the coordinator, by method and outcome: ok, refused (an answer about the request), failed (the link), rejected (by the open breaker), excluded (cancelled by the node, or a heartbeat timed out)."},
			[]string{"method", "outcome"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "framefarm_ambassador_forwarded_bytes_total",
			Help: "Bytes of stream messages forwarded: frames (coordinator to node) and parts (node to coordinator)."}, []string{"stream"}),
	}
	m.forwarded.WithLabelValues(streamFrames)
	m.forwarded.WithLabelValues(streamParts)
	reg.MustRegister(m.grpc, m.transitions, m.calls, m.forwarded, newBreakerCollector(a),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricsHandler serves the ambassador's metrics in the Prometheus
// exposition formats.
func (a *Ambassador) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{})
}

// outcome is how the breaker took a call that ended with err (raw, before
// nodeError).
func outcome(err error) string {
	switch {
	case err == nil:
		return outcomeOK
	case isBreakerRejection(err):
		return outcomeRejected
	case isExcluded(err):
		return outcomeExcluded
	case isSuccessful(err):
		return outcomeRefused
	}
	return outcomeFailed
}

// breakerCollector reads the breaker at each scrape.
type breakerCollector struct {
	a                         *Ambassador
	state, opens, consecutive *prometheus.Desc
}

func newBreakerCollector(a *Ambassador) *breakerCollector {
	return &breakerCollector{
		a: a,
		state: prometheus.NewDesc("framefarm_ambassador_breaker_state",
			"1 for the circuit breaker's current state (closed, half-open, open), 0 for the others.", []string{"state"}, nil),
		opens: prometheus.NewDesc("framefarm_ambassador_breaker_opens_total",
			"How many times the circuit breaker opened since the ambassador started.", nil, nil),
		consecutive: prometheus.NewDesc("framefarm_ambassador_breaker_consecutive_failures",
			"Link failures in a row in the breaker's current state.", nil, nil),
	}
}

func (bc *breakerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bc.state
	ch <- bc.opens
	ch <- bc.consecutive
}

func (bc *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	snap := bc.a.BreakerState()
	for _, st := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateHalfOpen, gobreaker.StateOpen} {
		v := 0.0
		if st.String() == snap.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(bc.state, prometheus.GaugeValue, v, st.String())
	}
	ch <- prometheus.MustNewConstMetric(bc.opens, prometheus.CounterValue, float64(snap.Opens))
	ch <- prometheus.MustNewConstMetric(bc.consecutive, prometheus.GaugeValue, float64(snap.ConsecutiveFailures))
}
