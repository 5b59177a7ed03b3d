package rollout

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestEvictionOutlivesStop: an agent stopped (its context cancelled)
// while an eviction request is on its way lets that request finish. Cut
// off, the API server may have recorded the disruption in the PDB without
// deleting the pod, and every eviction under that PDB is refused for two
// minutes: TestRollingUpgrade's drains stalled that way when its agent was
// killed mid-eviction. The stub API server lists one pod on the node and
// answers its eviction only after the agent was stopped.
func TestEvictionOutlivesStop(t *testing.T) {
	evicting := make(chan struct{})
	finished := make(chan bool, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/pods":
			fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"web-1","namespace":"default"},"spec":{"nodeName":"w-1"},"status":{"phase":"Running"}}]}`)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/pods/web-1/eviction"):
			io.Copy(io.Discard, r.Body) // so that the server notices the client leaving
			close(evicting)
			select {
			case <-r.Context().Done():
				finished <- false // the client went away mid-request
				return
			case <-time.After(500 * time.Millisecond):
			}
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Success","code":201}`)
			finished <- true
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
		}
	}))
	defer srv.Close()
	a, err := NewAgent(kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL}), AgentOptions{
		Node: "w-1", Install: func(context.Context, string) (int, error) { return 0, nil }, DrainTimeout: 10 * time.Second,
		Installed: func(context.Context) ([]string, error) { return nil, nil }, Registries: []string{"127.0.0.1:5000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.drain(ctx) }()
	select {
	case <-evicting:
	case <-time.After(5 * time.Second):
		t.Fatal("the drain asked for no eviction")
	}
	cancel()
	select {
	case ok := <-finished:
		if !ok {
			t.Fatal("the eviction request was cut off when the agent stopped")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the eviction request did not finish")
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("a stopped drain returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the drain did not return once stopped")
	}
}
