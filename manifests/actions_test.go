package manifests

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// actionsSpec has every field of an action; TestParseActions depends on
// its layout.
const actionsSpec = `apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata: {name: node, version: 1.0.0}
components:
  - name: kubelet
    files:
      - source: bin/kubelet
        sha256: 21282e868775aad07a944e8e292bbab99ac85d27e439a32cb5d03dbbf006c7f1
        target: /usr/bin/kubelet
    actions:
      before:
        - command: systemctl
          args: [stop, kubelet]
      after:
        - name: restart-kubelet
          command: /usr/bin/systemctl
          args: [restart, kubelet]
          env: {SYSTEMD_LOG_LEVEL: debug, PATH: /usr/sbin:/usr/bin}
          dir: /etc/kubernetes
          timeout: 90s
          onChange: true
        - name: join
          command: sh
          args: [-c, 'kubeadm join --config "$ZDT_ROOT/etc/kubeadm.yaml"']
          onChange: false
`

func TestParseActions(t *testing.T) {
	s, err := Parse("zdt.yaml", []byte(actionsSpec))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	yes, no := true, false
	want := Actions{
		Pos:    Pos{11, 7},
		Before: []Action{{Command: "systemctl", Args: []string{"stop", "kubelet"}, Pos: Pos{12, 11}}},
		After: []Action{
			{Name: "restart-kubelet", Command: "/usr/bin/systemctl", Args: []string{"restart", "kubelet"},
				Env: map[string]string{"SYSTEMD_LOG_LEVEL": "debug", "PATH": "/usr/sbin:/usr/bin"},
				Dir: "/etc/kubernetes", Timeout: "90s", OnChange: &yes, Pos: Pos{15, 11}},
			{Name: "join", Command: "sh", Args: []string{"-c", `kubeadm join --config "$ZDT_ROOT/etc/kubeadm.yaml"`},
				OnChange: &no, Pos: Pos{22, 11}},
		},
	}
	if got := s.Components[0].Actions; !reflect.DeepEqual(got, want) {
		t.Errorf("actions:\n got %+v\nwant %+v", got, want)
	}
	tests := []struct {
		a        Action
		name     string
		onChange bool
		timeout  time.Duration
	}{
		{want.Before[0], "systemctl", true, DefaultActionTimeout},
		{want.After[0], "restart-kubelet", true, 90 * time.Second},
		{want.After[1], "join", false, DefaultActionTimeout},
		{Action{Command: "/usr/local/bin/kubeadm", Timeout: "24h"}, "kubeadm", true, 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := tt.a.DisplayName(); got != tt.name {
			t.Errorf("DisplayName(%+v) = %q, want %q", tt.a, got, tt.name)
		}
		if got := tt.a.RunsOnChange(); got != tt.onChange {
			t.Errorf("RunsOnChange(%s) = %v, want %v", tt.name, got, tt.onChange)
		}
		if got, err := tt.a.TimeoutDuration(); err != nil || got != tt.timeout {
			t.Errorf("TimeoutDuration(%s) = %v, %v; want %v", tt.name, got, err, tt.timeout)
		}
	}
	// Raw parses to the same spec (what install reads from the bundle).
	again, err := Parse("zdt.yaml", s.Raw)
	if err != nil || !reflect.DeepEqual(again, s) {
		t.Errorf("Parse(Raw) = %+v, %v", again, err)
	}
}

// TestSchemaActions: the schema an editor uses knows actions, says
// onChange defaults to true, and lists command as required.
func TestSchemaActions(t *testing.T) {
	s := loadSchema(t)
	comp := s["properties"].(map[string]any)["components"].(map[string]any)["items"].(map[string]any)
	acts := comp["properties"].(map[string]any)["actions"].(map[string]any)
	after := acts["properties"].(map[string]any)["after"].(map[string]any)["items"].(map[string]any)
	props := after["properties"].(map[string]any)
	if d := props["onChange"].(map[string]any); d["type"] != "boolean" || d["default"] != true {
		t.Errorf("onChange schema = %v, want a boolean defaulting to true", d)
	}
	req, _ := json.Marshal(after["required"])
	if string(req) != `["command"]` {
		t.Errorf("action required = %s, want [\"command\"]", req)
	}
	if env := props["env"].(map[string]any); env["type"] != "object" || env["additionalProperties"].(map[string]any)["type"] != "string" {
		t.Errorf("env schema = %v, want a map of strings", env)
	}
}
