package registry

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

// metrics are the Prometheus metrics of one Handler, in a registry of its
// own (several handlers can live in one process).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	inFlight prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zdt_registry_http_requests_total", Help: "HTTP requests by method, API route and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "zdt_registry_http_request_duration_seconds", Help: "HTTP request latency by API route.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 30, 120},
		}, []string{"route"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zdt_registry_http_response_bytes_total", Help: "Response body bytes by API route.",
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zdt_registry_http_in_flight_requests", Help: "Requests being served.",
		}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.bytes, m.inFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(method, route string, code int, n int64, d time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
	m.bytes.WithLabelValues(route).Add(float64(n))
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Distribution logs through logrus' process-wide logger. bridgeLogrus
// silences its own output and forwards its entries to the most recent
// handler's slog logger: errors and warnings as warnings, the rest (its own
// per-request lines, which duplicate the access log) as debug.
var (
	logrusTarget atomic.Pointer[slog.Logger]
	logrusOnce   atomicOnce
)

type atomicOnce struct{ done atomic.Bool }

func bridgeLogrus(l *slog.Logger) {
	logrusTarget.Store(l)
	if logrusOnce.done.CompareAndSwap(false, true) {
		std := logrus.StandardLogger()
		std.SetOutput(discard{})
		std.SetLevel(logrus.InfoLevel)
		std.AddHook(logrusHook{})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

type logrusHook struct{}

func (logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (logrusHook) Fire(e *logrus.Entry) error {
	l := logrusTarget.Load()
	if l == nil {
		return nil
	}
	level := slog.LevelDebug
	if e.Level <= logrus.WarnLevel {
		level = slog.LevelWarn
	}
	if !l.Enabled(context.Background(), level) {
		return nil
	}
	attrs := make([]slog.Attr, 0, len(e.Data)+1)
	attrs = append(attrs, slog.String("component", "distribution"))
	for k, v := range e.Data {
		switch k {
		case "go.version", "http.request.useragent", "instance.id", "service", "version":
			continue
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	l.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}
