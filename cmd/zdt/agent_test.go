package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestAgentRegistryRequired: `zdt agent` without --registry, or with one
// that is not HOST[:PORT], is a usage error, before any cluster is
// contacted (the kubeconfig does not exist).
func TestAgentRegistryRequired(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--registry is required"},
		{[]string{"--registry", "https://registry.site"}, "without a scheme"},
		{[]string{"--registry", "registry.site:5000/zdt"}, "without a path"},
		{[]string{"--registry", "registry.site:5000", "--registry", ""}, "empty registry"},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"agent", "--node", "n1", "--kubeconfig", "/nonexistent/kubeconfig"}, tc.args...)
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("zdt %s: exit %d, want %d, saying %q:\n%s", strings.Join(args, " "), code, exitUsage, tc.want, stderr.String())
		}
	}
}
