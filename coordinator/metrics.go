package coordinator

import (
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/framefarm/framefarm/coordinator/job"
)

// The coordinator's Prometheus metrics, on a registry of its own (several
// coordinators may share a process in tests). Gauges are read from the
// farm's state on each scrape (farmCollector), so they cannot drift from
// it; counters and histograms are observed where their events happen.
//
// Label values are bounded: job_id by the jobs the farm holds (a deleted
// job's series go with it), node by the node registry's cap (maxNodes).

// metrics holds the coordinator's registry and its event metrics.
type metrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	framesEncoded    prometheus.Counter
	encodeSeconds    prometheus.Histogram
	partBytes        prometheus.Histogram
	grantSeconds     prometheus.Histogram
	expiries         *prometheus.CounterVec
	commitEvents     prometheus.Histogram
	commitSeconds    prometheus.Histogram
	partUploadBytes  prometheus.Counter
	frameUploadBytes prometheus.Counter
	frameStreamBytes prometheus.Counter
	ownFaults        prometheus.Counter
}

// The reasons of framefarm_lease_expiries_total.
const (
	expiredHeartbeat = "heartbeat" // no heartbeat within --heartbeat-timeout
	expiredProgress  = "progress"  // no progress within --lease
)

func newMetrics(c *Coordinator) *metrics {
	reg := prometheus.NewRegistry()
	f := promFactory{reg}
	m := &metrics{
		reg: reg,
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(0.001, 4, 10)))),
		framesEncoded: f.counter("framefarm_frames_encoded_total", "Frames in the parts accepted (verified and stored)."),
		encodeSeconds: f.histogram("framefarm_part_encode_seconds", "How long ffmpeg took on the node for each accepted part, as the node reports it.",
			prometheus.ExponentialBuckets(0.25, 2, 14)),
		partBytes: f.histogram("framefarm_part_bytes", "Size of each accepted part.",
			prometheus.ExponentialBuckets(64<<10, 4, 10)),
		grantSeconds: f.histogram("framefarm_grant_latency_seconds", "From a node's request for work reaching the coordinator to its answer with a set, durable (a request that waits for work counts its wait).",
			prometheus.ExponentialBuckets(0.0005, 2, 16)),
		expiries: f.counterVec("framefarm_lease_expiries_total", "Sets taken back from their node: reason heartbeat (silent for --heartbeat-timeout) or progress (no progress for --lease).", "reason"),
		commitEvents: f.histogram("framefarm_commit_batch_events", "Events written by each group commit (one SQLite transaction and fsync).",
			prometheus.ExponentialBuckets(1, 2, 12)),
		commitSeconds: f.histogram("framefarm_commit_seconds", "How long each group commit took to be durable: the part folders' fsyncs, the SQLite transaction and its fsync.",
			prometheus.ExponentialBuckets(0.0002, 2, 16)),
		partUploadBytes:  f.counter("framefarm_part_upload_bytes_total", "Bytes of parts received whole from nodes, accepted or not."),
		frameUploadBytes: f.counter("framefarm_frame_upload_bytes_total", "Bytes of frames stored from uploads (submit --upload)."),
		frameStreamBytes: f.counter("framefarm_frame_stream_bytes_total", "Bytes of frames streamed to nodes."),
		ownFaults: f.counter("framefarm_own_faults_total",
			"Calls the coordinator answered with a fault of its own (its disk, descriptors or store), never counted against a node or set."),
	}
	m.expiries.WithLabelValues(expiredHeartbeat)
	m.expiries.WithLabelValues(expiredProgress)
	reg.MustRegister(m.grpc, newFarmCollector(c),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricsHandler serves the coordinator's metrics in the Prometheus
// exposition formats.
func (c *Coordinator) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(c.metrics.reg, promhttp.HandlerOpts{})
}

// promFactory makes metrics registered on one registry.
type promFactory struct{ reg prometheus.Registerer }

func (f promFactory) counter(name, help string) prometheus.Counter {
	m := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(m)
	return m
}

func (f promFactory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	m := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(m)
	return m
}

func (f promFactory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	m := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(m)
	return m
}

// partAccepted counts a part once its set is C, durably.
func (m *metrics) partAccepted(frames int, encodeMS uint64, size int64) {
	m.framesEncoded.Add(float64(frames))
	m.encodeSeconds.Observe(float64(encodeMS) / 1000)
	m.partBytes.Observe(float64(size))
}

// leaseExpired counts the leases of events taken back by Job.Expire, by
// the rule Expire applied: silence first, then no progress.
func (m *metrics) leaseExpired(j *job.Job, events []job.Event, now time.Time, heartbeatTimeout time.Duration) {
	for _, e := range events {
		if e.Kind != job.EvLeaseExpired {
			continue
		}
		why := expiredProgress
		if now.Sub(j.Sets[e.Set].LastBeat) > heartbeatTimeout {
			why = expiredHeartbeat
		}
		m.expiries.WithLabelValues(why).Inc()
	}
}

// committed observes one group commit.
func (m *metrics) committed(events int, took time.Duration) {
	m.commitEvents.Observe(float64(events))
	m.commitSeconds.Observe(took.Seconds())
}

// farmCollector reads the farm's gauges from its state under the lock at
// each scrape.
type farmCollector struct {
	c                                                                *Coordinator
	jobs, jobSets, jobFrames, jobFramesDone, jobExcluded, jobInfo    *prometheus.Desc
	queueDepth, nodes, nodesAlive, nodesWaiting, breaker, breakerOps *prometheus.Desc
}

func newFarmCollector(c *Coordinator) *farmCollector {
	d := prometheus.NewDesc
	return &farmCollector{
		c:             c,
		jobs:          d("framefarm_jobs", "Jobs by state (queued, running, joining, done, failed, cancelled).", []string{"state"}, nil),
		jobSets:       d("framefarm_job_sets", "A job's sets by state: A available, B assigned, C completed, F failed.", []string{"job_id", "state"}, nil),
		jobFrames:     d("framefarm_job_frames", "A job's frames.", []string{"job_id"}, nil),
		jobFramesDone: d("framefarm_job_frames_done", "A job's frames encoded so far, as its nodes report them.", []string{"job_id"}, nil),
		jobExcluded:   d("framefarm_job_nodes_excluded", "Nodes that failed too many of a job's sets to get more of them.", []string{"job_id"}, nil),
		jobInfo:       d("framefarm_job_info", "Always 1: a job's name and state.", []string{"job_id", "name", "state"}, nil),
		queueDepth:    d("framefarm_queue_depth", "Sets available to render across the runnable (queued and running) jobs: what more nodes would take.", nil, nil),
		nodes:         d("framefarm_nodes", "Nodes the farm knows (at most 5000).", nil, nil),
		nodesAlive:    d("framefarm_nodes_alive", "Nodes heard from within --heartbeat-timeout, or waiting for work now.", nil, nil),
		nodesWaiting:  d("framefarm_nodes_waiting", "Requests for work waiting for a set.", nil, nil),
		breaker:       d("framefarm_node_breaker_state", "A node's ambassador circuit breaker as last reported: 0 closed, 1 half-open, 2 open.", []string{"node"}, nil),
		breakerOps:    d("framefarm_node_breaker_opens_total", "How many times a node's ambassador breaker opened since that ambassador started, as last reported.", []string{"node"}, nil),
	}
}

func (fc *farmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{fc.jobs, fc.jobSets, fc.jobFrames, fc.jobFramesDone, fc.jobExcluded, fc.jobInfo,
		fc.queueDepth, fc.nodes, fc.nodesAlive, fc.nodesWaiting, fc.breaker, fc.breakerOps} {
		ch <- d
	}
}

// jobGauges is what a scrape reads of one job.
type jobGauges struct {
	id, name, state    string
	sets               [4]int // A, B, C, F
	frames, framesDone int
	excluded           int
}

// nodeGauges is what a scrape reads of one node's breaker.
type nodeGauges struct {
	name    string
	breaker float64
	opens   uint32
}

// setStates are framefarm_job_sets's states, in jobGauges.sets order.
func setStates() [4]job.State {
	return [4]job.State{job.Available, job.Assigned, job.Completed, job.Failed}
}

// setSlot is st's place in setStates.
func setSlot(st job.State) int {
	switch st {
	case job.Assigned:
		return 1
	case job.Completed:
		return 2
	case job.Failed:
		return 3
	}
	return 0
}

// breakerValue is framefarm_node_breaker_state's value of a reported state
// (gobreaker's own numbering); an unknown state has no series.
func breakerValue(state string) (float64, bool) {
	switch state {
	case "closed":
		return 0, true
	case "half-open":
		return 1, true
	case "open":
		return 2, true
	}
	return 0, false
}

func (fc *farmCollector) Collect(ch chan<- prometheus.Metric) {
	c := fc.c
	var jobs []jobGauges
	var nodes []nodeGauges
	byState := map[job.JobState]int{}
	depth, alive := 0, 0
	c.mu.Lock()
	now := c.cfg.Now()
	waiting := len(c.waiters)
	asking := map[string]bool{}
	for _, w := range c.waiters {
		asking[w.node] = true
	}
	for _, jr := range c.queue {
		j := jr.job
		g := jobGauges{id: jr.rec.ID, name: jr.rec.Name, state: string(j.State), frames: len(jr.frames)}
		for _, s := range j.Sets {
			g.sets[setSlot(s.State)]++
			g.framesDone += s.FramesDone
		}
		for name := range j.NodeFailures {
			if j.Excluded(name) {
				g.excluded++
			}
		}
		if j.State == job.JobQueued || j.State == job.JobRunning {
			depth += g.sets[0]
		}
		byState[j.State]++
		jobs = append(jobs, g)
	}
	for name, ni := range c.nodes {
		if now.Sub(ni.lastSeen) <= c.cfg.HeartbeatTimeout || asking[name] {
			alive++
		}
		if v, ok := breakerValue(ni.breaker.GetState()); ok {
			nodes = append(nodes, nodeGauges{name: name, breaker: v, opens: ni.breaker.GetOpens()})
		}
	}
	known := len(c.nodes)
	c.mu.Unlock()

	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, st := range []job.JobState{job.JobQueued, job.JobRunning, job.JobJoining, job.JobDone, job.JobFailed, job.JobCancelled} {
		gauge(fc.jobs, float64(byState[st]), string(st))
	}
	for _, g := range jobs {
		for i, st := range setStates() {
			gauge(fc.jobSets, float64(g.sets[i]), g.id, string(st))
		}
		gauge(fc.jobFrames, float64(g.frames), g.id)
		gauge(fc.jobFramesDone, float64(g.framesDone), g.id)
		gauge(fc.jobExcluded, float64(g.excluded), g.id)
		gauge(fc.jobInfo, 1, g.id, g.name, g.state)
	}
	gauge(fc.queueDepth, float64(depth))
	gauge(fc.nodes, float64(known))
	gauge(fc.nodesAlive, float64(alive))
	gauge(fc.nodesWaiting, float64(waiting))
	for _, n := range nodes {
		gauge(fc.breaker, n.breaker, n.name)
		ch <- prometheus.MustNewConstMetric(fc.breakerOps, prometheus.CounterValue, float64(n.opens), n.name)
	}
}
