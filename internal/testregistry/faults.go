package testregistry

import (
	"net/http"
	"strings"
	"sync/atomic"
)

// Faults are failures of the blob endpoint a test switches on and off
// while the registry runs: pass Faults.Middleware as Options.Middleware.
// The zero value injects nothing. Safe for concurrent use.
type Faults struct {
	hangAfter   atomic.Int64
	ignoreRange atomic.Bool
}

// SetHangAfter makes every blob GET send at most n body bytes, then hang
// until the client goes away (a kill mid-fetch); 0 switches it off.
func (f *Faults) SetHangAfter(n int64) { f.hangAfter.Store(n) }

// SetIgnoreRange makes blob GETs ignore Range headers (200 and the whole
// blob, as some servers answer).
func (f *Faults) SetIgnoreRange(on bool) { f.ignoreRange.Store(on) }

// Middleware wraps the registry handler with the faults switched on.
func (f *Faults) Middleware(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			h.ServeHTTP(w, r)
			return
		}
		if f.ignoreRange.Load() {
			r = r.Clone(r.Context())
			r.Header.Del("Range")
		}
		if n := f.hangAfter.Load(); n > 0 {
			w = &hangingWriter{ResponseWriter: w, left: n, r: r}
		}
		h.ServeHTTP(w, r)
	})
}

// hangingWriter passes left bytes, then blocks until the request ends.
type hangingWriter struct {
	http.ResponseWriter
	left int64
	r    *http.Request
}

func (w *hangingWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= w.left {
		w.left -= int64(len(p))
		return w.ResponseWriter.Write(p)
	}
	n, err := w.ResponseWriter.Write(p[:w.left])
	w.left = 0
	if err != nil {
		return n, err
	}
	if fl, ok := w.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	<-w.r.Context().Done()
	return n, w.r.Context().Err()
}
