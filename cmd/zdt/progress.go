package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress renders a library's (done, total) callbacks: a bar on a
// terminal, JSON lines with --output json, nothing otherwise.
type progress struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	enc   *json.Encoder
	phase string
	last  time.Time
	// bytes says the bar counts bytes: its description carries done/total
	// and a rate (see describe), not progressbar's own rate, which is
	// absurd over the first milliseconds ("24 TB/s").
	bytes bool
	start time.Time
}

func (g *globals) progress(phase string) *progress {
	p := &progress{phase: phase}
	switch {
	case g.json():
		p.enc = json.NewEncoder(g.stderr)
	case g.isTerminal():
		p.bar, p.bytes = newBytesBar(g.stderr, phase), true
	}
	return p
}

// newBytesBar is a bar whose description says the bytes and the rate.
func newBytesBar(w io.Writer, phase string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(phase),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

// minRateWindow is how long a phase must have run before a rate is shown:
// over less, a burst (blobs from the page cache, a first chunk) says
// nothing about the throughput.
const minRateWindow = time.Second

// describe is a byte bar's text: "fetching 1.2 GiB / 3.4 GiB (85.3 MiB/s)",
// the rate only once the phase ran for minRateWindow.
func describe(phase string, done, total int64, elapsed time.Duration) string {
	s := fmt.Sprintf("%s %s / %s", phase, humanBytes(max(done, 0)), humanBytes(max(total, 0)))
	if elapsed >= minRateWindow && done > 0 {
		s += fmt.Sprintf(" (%s/s)", humanBytes(int64(float64(done)/elapsed.Seconds())))
	}
	return s
}

// update is safe to call from several goroutines.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.bar != nil:
		if p.bytes {
			now := time.Now()
			if p.start.IsZero() {
				p.start = now
			}
			p.bar.Describe(describe(p.phase, done, total, now.Sub(p.start)))
		}
		p.bar.ChangeMax64(total)
		_ = p.bar.Set64(done)
	case p.enc != nil:
		if now := time.Now(); now.Sub(p.last) >= 500*time.Millisecond || done == total {
			p.last = now
			_ = p.enc.Encode(progressLine{Phase: p.phase, Done: done, Total: total})
		}
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
