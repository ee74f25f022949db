package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The node's Prometheus metrics, on a registry of its own, counted as its
// sets end. Every label takes a handful of values.

// metrics holds the node's registry and its metrics.
type metrics struct {
	reg            *prometheus.Registry
	encodeSeconds  prometheus.Histogram
	ffmpegFailures prometheus.Counter
	sets           *prometheus.CounterVec
	frames         prometheus.Counter
	uploadBytes    prometheus.Counter
	bucketBytes    prometheus.Counter
}

// The outcomes of framefarm_node_sets_total: how a set granted to the node
// ended (see Node.render).
const (
	setUploaded  = "uploaded"   // its part was accepted
	setFailed    = "failed"     // it failed here (ffmpeg, the disk) and was given back with the error
	setRefused   = "refused"    // the coordinator refused its part
	setLost      = "lost"       // the lease moved on (expired, the job was cancelled)
	setGivenBack = "given_back" // the node stopped, or the coordinator could not be reached
)

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		encodeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "framefarm_node_encode_seconds",
			Help: "How long ffmpeg took to encode each set that it encoded.", Buckets: prometheus.ExponentialBuckets(0.25, 2, 14)}),
		ffmpegFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "framefarm_node_ffmpeg_failures_total",
			Help: "Encodes that failed: ffmpeg exited with an error, or wrote a part without the set's frames."}),
		sets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "framefarm_node_sets_total",
			Help: "Sets granted to this node, by how they ended: uploaded, failed, refused (the part), lost (the lease), given_back."},
			[]string{"outcome"}),
		frames: prometheus.NewCounter(prometheus.CounterOpts{Name: "framefarm_node_frames_encoded_total",
			Help: "Frames of the sets uploaded."}),
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "framefarm_node_upload_bytes_total",
			Help: "Bytes of parts uploaded and accepted."}),
		bucketBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "framefarm_node_bucket_bytes_total",
			Help: "Bytes of frames read from a bucket and of parts put into one, through pre-signed URLs (not through the coordinator)."}),
	}
	for _, o := range []string{setUploaded, setFailed, setRefused, setLost, setGivenBack} {
		m.sets.WithLabelValues(o)
	}
	reg.MustRegister(m.encodeSeconds, m.ffmpegFailures, m.sets, m.frames, m.uploadBytes, m.bucketBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricsHandler serves the node's metrics in the Prometheus exposition
// formats.
func (n *Node) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{})
}
