// Package mototest runs moto's server (an AWS emulator: EC2, EBS direct
// APIs) for tests: `python3 -m moto.server` on a free 127.0.0.1 port,
// stopped when the test ends (and, on Linux, when the test binary dies).
// Tests that need it skip when python3 or moto is missing, unless
// ZDT_REQUIRE_CLIENTS=1, then they fail.
package mototest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Region is the region tests use.
const Region = "us-east-1"

// Server is a running moto server.
type Server struct {
	// URL is its endpoint (http://127.0.0.1:PORT), for both EC2 and EBS.
	URL  string
	Port int
	cmd  *exec.Cmd
	done chan struct{}
}

// Available says why moto's server cannot run here ("" when it can).
func Available() string {
	if _, err := exec.LookPath("python3"); err != nil {
		return "python3 is not installed"
	}
	if out, err := exec.Command("python3", "-c", "import moto.server, moto.ebs, moto.ec2").CombinedOutput(); err != nil {
		return fmt.Sprintf("python3 cannot import moto (pip install 'moto[server]'): %v: %s", err, out)
	}
	return ""
}

// SetEnv sets fake credentials and Region in the environment
// (t.Setenv), so that the AWS SDK's standard chain finds them and nothing
// else (no shared config, no IMDS).
func SetEnv(t testing.TB) {
	for k, v := range env {
		t.Setenv(k, v)
	}
}

var env = map[string]string{
	"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
	"AWS_REGION": Region, "AWS_DEFAULT_REGION": Region, "AWS_EC2_METADATA_DISABLED": "true",
	"AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
}

// Env is the environment SetEnv sets, as KEY=VALUE (for a child process).
func Env() []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// Start starts moto's server on a free port for one test (stopped at its
// end), warmed up (moto loads its EC2 emulation on the first request,
// which takes seconds), and calls SetEnv. Tests that can share one server
// use Shared instead.
func Start(t testing.TB) *Server {
	t.Helper()
	skipUnavailable(t)
	SetEnv(t)
	s, err := Launch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func skipUnavailable(t testing.TB) {
	t.Helper()
	if why := Available(); why != "" {
		if os.Getenv("ZDT_REQUIRE_CLIENTS") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
}

var shared struct {
	sync.Mutex
	s   *Server
	err error
}

// Shared returns the test binary's one moto server (started on first use,
// warmed up; StopShared in TestMain stops it) with its state reset: no
// images, snapshots or volumes. It calls SetEnv. Tests using it must not
// run in parallel.
func Shared(t testing.TB) *Server {
	t.Helper()
	skipUnavailable(t)
	SetEnv(t)
	shared.Lock()
	defer shared.Unlock()
	if shared.s == nil && shared.err == nil {
		shared.s, shared.err = Launch()
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	if err := shared.s.Reset(); err != nil {
		t.Fatal(err)
	}
	return shared.s
}

// StopShared stops the server Shared started, if any (from TestMain).
func StopShared() {
	shared.Lock()
	defer shared.Unlock()
	if shared.s != nil {
		shared.s.Stop()
	}
}

// Launch starts moto's server on a free port and waits until it answers
// EC2 requests. The caller stops it.
func Launch() (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{URL: "http://127.0.0.1:" + strconv.Itoa(port), Port: port}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	cmd := exec.Command("python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", strconv.Itoa(s.Port))
	cmd.SysProcAttr = sysProcAttr()
	// moto's own boto configuration: none of the test's AWS settings.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if os.Getenv("ZDT_MOTO_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		// An EC2 request (moto routes by the credential scope of the
		// Authorization header and checks no signature): it also makes
		// moto load its EC2 emulation now rather than in the test.
		req, _ := http.NewRequest("POST", s.URL+"/", strings.NewReader("Action=DescribeRegions&Version=2016-11-15"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/"+Region+"/ec2/aws4_request, SignedHeaders=host, Signature=0")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-s.done:
			return fmt.Errorf("moto server exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("moto server did not answer on %s: %v", s.URL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Reset empties moto's state (POST /moto-api/reset).
func (s *Server) Reset() error {
	resp, err := http.Post(s.URL+"/moto-api/reset", "application/json", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("resetting moto: %s", resp.Status)
	}
	return nil
}

// Stop kills the server (SIGKILL: as if it died) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Restart starts a new server on the same port (with empty state: moto
// keeps everything in memory).
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}
