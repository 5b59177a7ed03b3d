package registry

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of the connection limits and timeouts of Serve. A client that
// stops reading (or sending) holds its connection, a goroutine and a few
// small buffers until one of these fires; together they bound what
// anonymous clients can make the server hold.
const (
	// DefaultMaxConnections caps the connections served at once.
	DefaultMaxConnections = 1024
	// DefaultMaxConnectionsPerClient caps the connections of one client
	// IP address.
	DefaultMaxConnectionsPerClient = 64
	// DefaultWriteTimeout is how long one write to a client may block: a
	// download that makes progress is never cut, one whose client stops
	// reading is dropped after this long.
	DefaultWriteTimeout = time.Minute
	// DefaultReadTimeout is how long one read of a request body may
	// block (an upload that stalls).
	DefaultReadTimeout = time.Minute
	// DefaultReadHeaderTimeout bounds the TLS handshake and the request
	// headers.
	DefaultReadHeaderTimeout = 30 * time.Second
	// DefaultIdleTimeout closes a keep-alive connection idle this long.
	DefaultIdleTimeout = 2 * time.Minute
)

// slots counts what is held at once, in total and per client IP
// address, against caps.
type slots struct {
	max, perClient int

	mu     sync.Mutex
	total  int
	byAddr map[string]int
}

func newSlots(max, perClient int) *slots {
	return &slots{max: max, perClient: perClient, byAddr: map[string]int{}}
}

// acquire takes a slot for ip, or says why it can't.
func (s *slots) acquire(ip string) (why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.total >= s.max:
		return "server busy"
	case s.byAddr[ip] >= s.perClient:
		return "too many from this client"
	}
	s.total++
	s.byAddr[ip]++
	return ""
}

func (s *slots) release(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.byAddr[ip]--; s.byAddr[ip] <= 0 {
		delete(s.byAddr, ip)
	}
}

// held is the number of slots taken.
func (s *slots) held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// connLimiter is a net.Listener that refuses (accepts and closes at once)
// connections over its slots' caps. A slot is given back when its
// connection is closed.
type connLimiter struct {
	net.Listener
	slots   *slots
	refused func(remote net.Addr, why string)
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := clientIP(c.RemoteAddr())
		if why := l.slots.acquire(ip); why != "" {
			_ = c.Close()
			if l.refused != nil {
				l.refused(c.RemoteAddr(), why)
			}
			continue
		}
		return &limitedConn{Conn: c, slots: l.slots, ip: ip}, nil
	}
}

func clientIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// limitedConn gives its slot back once closed.
type limitedConn struct {
	net.Conn
	slots *slots
	ip    string
	once  sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.slots.release(c.ip) })
	return err
}

// limitRequests answers 429 TOOMANYREQUESTS to requests over the caps of
// s (requests in flight, in total and per client): HTTP/2 multiplexes
// many requests on one connection, so capping connections alone does not
// bound the handlers a client can leave stuck.
func limitRequests(h http.Handler, s *slots) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := r.RemoteAddr
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		if why := s.acquire(ip); why != "" {
			w.Header().Set("Retry-After", "1")
			writeOCIError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", why)
			return
		}
		defer s.release(ip)
		h.ServeHTTP(w, r)
	})
}

// withDeadlines wraps h so that each write to the client and each read of
// the request body must make progress within write and read: the deadline
// is pushed back before every write and read, so a large transfer that
// keeps moving is never cut while a client that stops reading is dropped.
// (http.Server's WriteTimeout would bound the whole response instead.)
func withDeadlines(h http.Handler, write, read time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		dw := &deadlineWriter{ResponseWriter: w, rc: rc, d: write}
		dw.extend() // also clears a deadline left by an earlier request on the connection
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, d: read}
		}
		h.ServeHTTP(dw, r)
	})
}

// deadlineWriter extends the connection's write deadline before each
// write.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *deadlineWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.d)) }

func (w *deadlineWriter) WriteHeader(code int) {
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(b)
}

// ReadFrom copies in small pooled chunks, each write with its own
// deadline (the server's own ReadFrom would send the whole body under
// one).
func (w *deadlineWriter) ReadFrom(src io.Reader) (int64, error) {
	return copyPooled(writerOnly{w}, src)
}

func (w *deadlineWriter) Flush() {
	w.extend()
	_ = w.rc.Flush()
}

func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// deadlineBody extends the connection's read deadline before each read of
// the request body, until the body ends: then the server reads the
// connection in the background (to notice a client that goes away), and
// a deadline would cut it.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	d    time.Duration
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if !b.done {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.done = true
	}
	return n, err
}

// writerOnly hides a writer's ReadFrom (so io.CopyBuffer uses the buffer).
type writerOnly struct{ io.Writer }

// copyBufSize is the chunk blobs are sent in: small, so a client that
// stops reading pins little memory, and pooled.
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyPooled copies src to dst through a pooled buffer.
func copyPooled(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(dst, readerOnly{src}, *bp)
}

// readerOnly hides a reader's WriteTo (so io.CopyBuffer uses the buffer).
type readerOnly struct{ io.Reader }
