package main

import (
	"context"
	"errors"
	"slices"
	"testing"

	"zdt.dev/zdt/installer"
)

// TestAgentRegistries: the agent's --registry is the registry --from
// names unless --agent-registry says otherwise; a --bundle install must
// name one (the agent refuses to start without); a bad one is a usage
// error; --agent-* without --agent too.
func TestAgentRegistries(t *testing.T) {
	base := func() *installOptions {
		o := &installOptions{kubeconfig: "/etc/kubernetes/admin.conf"}
		o.trust.insecure = true
		o.agent.enable, o.agent.node = true, "n1"
		return o
	}
	for _, tc := range []struct {
		name  string
		edit  func(*installOptions)
		want  []string
		usage bool
	}{
		{"--from", func(o *installOptions) { o.from = "node1.site:5000/zdt/platform:1.0" }, []string{"node1.site:5000"}, false},
		{"--from with a prefix", func(o *installOptions) { o.from = "harbor.site/team/zdt/platform@sha256:" + sha64 }, []string{"harbor.site"}, false},
		{"--agent-registry over --from", func(o *installOptions) {
			o.from, o.agent.registries = "node1.site:5000/zdt/platform:1.0", []string{"a.site:5000", "b.site"}
		}, []string{"a.site:5000", "b.site"}, false},
		{"--bundle and --agent-registry", func(o *installOptions) { o.bundle, o.agent.registries = "p.zdt", []string{"a.site:5000"} }, []string{"a.site:5000"}, false},
		{"--bundle without --agent-registry", func(o *installOptions) { o.bundle = "p.zdt" }, nil, true},
		{"a registry with a path", func(o *installOptions) { o.bundle, o.agent.registries = "p.zdt", []string{"a.site/x"} }, nil, true},
		{"--agent-registry without --agent", func(o *installOptions) {
			o.agent.enable, o.agent.node, o.agent.registries = false, "", []string{"a.site"}
		}, nil, true},
	} {
		o := base()
		tc.edit(o)
		var opts installer.Options
		err := o.applyAgent(context.Background(), &opts)
		var ue usageError
		switch {
		case tc.usage && !errors.As(err, &ue):
			t.Errorf("%s: %v, want a usage error", tc.name, err)
		case !tc.usage && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.usage && (opts.Agent == nil || !slices.Equal(opts.Agent.Registries, tc.want)):
			t.Errorf("%s: agent %+v, want registries %v", tc.name, opts.Agent, tc.want)
		}
	}
}

const sha64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
