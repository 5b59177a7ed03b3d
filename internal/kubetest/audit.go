package kubetest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// Request is one API request as the audit log records it.
type Request struct {
	User      string
	Verb      string // get, list, watch, create, update, patch, delete, deletecollection
	URI       string
	Resource  string
	Namespace string
	Name      string
	Code      int
}

// Write reports whether the request changes state.
func (r Request) Write() bool {
	switch r.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

func (r Request) String() string {
	return fmt.Sprintf("%s %s %s (%d)", r.User, r.Verb, r.URI, r.Code)
}

// auditEvent is the part of audit.k8s.io/v1 Event that Requests reads.
type auditEvent struct {
	Stage      string `json:"stage"`
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// Requests returns every completed request user sent so far, in log order.
// It first makes a marker request and waits until the log holds it, so
// every request that finished before the call is in the result.
func (c *Cluster) Requests(ctx context.Context, user string) ([]Request, error) {
	c.marks++
	mark := fmt.Sprintf("/api/v1/namespaces/kubetest-audit-mark-%d", c.marks)
	if _, _, err := c.Do(ctx, http.MethodGet, mark, nil); err != nil {
		return nil, fmt.Errorf("audit marker: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		reqs, seen, err := c.readAudit(user, mark)
		if err != nil || seen {
			return reqs, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("audit marker %s not logged after 20s", mark)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Writes returns the write requests among Requests(ctx, user).
func (c *Cluster) Writes(ctx context.Context, user string) ([]Request, error) {
	reqs, err := c.Requests(ctx, user)
	if err != nil {
		return nil, err
	}
	var w []Request
	for _, r := range reqs {
		if r.Write() {
			w = append(w, r)
		}
	}
	return w, nil
}

func (c *Cluster) readAudit(user, mark string) ([]Request, bool, error) {
	f, err := os.Open(c.AuditLog)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var reqs []Request
	seen := false
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, false, fmt.Errorf("audit log: %w", err)
		}
		if ev.Stage != "ResponseComplete" && ev.Stage != "Panic" {
			continue
		}
		if ev.User.Username == AdminUser && strings.HasPrefix(ev.RequestURI, mark) {
			seen = true
		}
		if ev.User.Username != user {
			continue
		}
		r := Request{User: user, Verb: ev.Verb, URI: ev.RequestURI}
		if ev.ObjectRef != nil {
			r.Resource, r.Namespace, r.Name = ev.ObjectRef.Resource, ev.ObjectRef.Namespace, ev.ObjectRef.Name
		}
		if ev.ResponseStatus != nil {
			r.Code = ev.ResponseStatus.Code
		}
		reqs = append(reqs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, false, fmt.Errorf("audit log: %w", err)
	}
	return reqs, seen, nil
}
