package main

import (
	"encoding/json"
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
}

func (g *globals) progress(phase string) *progress {
	p := &progress{phase: phase}
	switch {
	case g.json():
		p.enc = json.NewEncoder(g.stderr)
	case g.isTerminal():
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(g.stderr),
			progressbar.OptionSetDescription(phase),
			progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

// update is safe to call from several goroutines.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.bar != nil:
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
