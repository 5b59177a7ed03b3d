package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a background process: a registry or a zdt server. Stop it; the
// driver also stops every proc still running when it exits.
type proc struct {
	Addr  string // host:port it listens on
	Start time.Time
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	log   *os.File
}

// running holds the procs not yet stopped, to stop on exit.
var running = map[*proc]bool{}

// stopAll stops every proc still running.
func stopAll() {
	for p := range running {
		_ = p.Stop()
	}
}

func startProc(ctx context.Context, addr, logPath string, env []string, argv ...string) (*proc, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(lf, "\n$ %s\n", strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	p := &proc{Addr: addr, cmd: cmd, done: make(chan struct{}), log: lf, Start: time.Now()}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	running[p] = true
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended (and with what).
func (p *proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// HWM is the process's peak resident set so far (VmHWM), in bytes.
func (p *proc) HWM() int64 {
	if p.cmd.Process == nil {
		return 0
	}
	return vmHWM(p.cmd.Process.Pid)
}

func vmHWM(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// Stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits.
func (p *proc) Stop() error {
	delete(running, p)
	defer p.log.Close()
	if exited, _ := p.Exited(); exited {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// WaitHTTP polls url until it answers 200, the process exits or timeout.
func (p *proc) WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", manifestAccept)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited before answering (%v); see %s", p.cmd.Args[0], err, p.log.Name())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer %s within %s; see %s", p.cmd.Args[0], url, timeout, p.log.Name())
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freeAddr finds a free loopback port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// registryConfig is a plain distribution config: filesystem storage,
// in-memory blob descriptor cache, no redirects, errors-only logs.
const registryConfig = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: %s
`

// startRegistry runs distribution's `registry serve` over storage dir on a
// free loopback port, and waits until it answers.
func startRegistry(ctx context.Context, dir, logPath string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := logPath + ".config.yml"
	if err := os.WriteFile(cfg, fmt.Appendf(nil, registryConfig, dir, addr), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc(ctx, addr, logPath, []string{"OTEL_TRACES_EXPORTER=none"}, "registry", "serve", cfg)
	if err != nil {
		return nil, err
	}
	if err := p.WaitHTTP(ctx, "http://"+addr+"/v2/", 30*time.Second); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}
