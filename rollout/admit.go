package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrRegistryNotAllowed is matched by a rollout whose reference names a
// registry the agent was not given (AgentOptions.Registries).
var ErrRegistryNotAllowed = errors.New("registry not allowed")

// RegistryError is a rollout reference refused for its registry.
type RegistryError struct {
	// Reference is the refused reference, Host its registry.
	Reference, Host string
	// Allowed are the registries the agent installs from.
	Allowed []string
}

func (e *RegistryError) Error() string {
	return fmt.Sprintf("%s: registry %q is not one this agent installs from (allowed: %s)", e.Reference, e.Host, strings.Join(e.Allowed, ", "))
}

func (e *RegistryError) Unwrap() error { return ErrRegistryNotAllowed }

// maxRegistryLen bounds a registry name (a DNS name of 253 bytes, a port).
const maxRegistryLen = 260

// CheckRegistry checks a registry an agent may install from: HOST[:PORT],
// no scheme, no path, no space or control character.
func CheckRegistry(r string) error {
	switch {
	case r == "":
		return errors.New("empty registry")
	case len(r) > maxRegistryLen:
		return fmt.Errorf("registry %.40q…: longer than %d bytes", r, maxRegistryLen)
	case strings.Contains(r, "://"):
		return fmt.Errorf("registry %q: give HOST[:PORT], without a scheme", r)
	case strings.ContainsAny(r, "/@"):
		return fmt.Errorf("registry %q: give HOST[:PORT], without a path", r)
	}
	for _, c := range r {
		if c <= ' ' || c == 0x7f || c > 0x7e {
			return fmt.Errorf("registry %q: not a HOST[:PORT]", r)
		}
	}
	return nil
}

// referenceHost is the registry of a bundle reference
// (HOST[:PORT]/[PREFIX/]zdt/NAME@DIGEST): what precedes its first slash.
func referenceHost(ref string) (string, bool) {
	host, _, ok := strings.Cut(ref, "/")
	if !ok || CheckRegistry(host) != nil {
		return "", false
	}
	return host, true
}

// allowedRegistry checks that ref names one of allowed (registry names
// compared without case: DNS names are case-insensitive).
func allowedRegistry(ref string, allowed []string) error {
	host, ok := referenceHost(ref)
	if ok {
		for _, r := range allowed {
			if strings.EqualFold(host, r) {
				return nil
			}
		}
	} else {
		host = ref
		if i := strings.IndexByte(host, '/'); i >= 0 {
			host = host[:i]
		}
	}
	return &RegistryError{Reference: ref, Host: host, Allowed: allowed}
}

// admit decides, before the node is cordoned, whether this agent installs
// ref at all: its registry must be one of Registries, and Admit (if set)
// must accept it. A reference once admitted is not asked again.
func (a *Agent) admit(ctx context.Context, ref string) error {
	a.mu.Lock()
	done := a.admitted == ref
	a.mu.Unlock()
	if done {
		return nil
	}
	if err := allowedRegistry(ref, a.o.Registries); err != nil {
		return err
	}
	if a.o.Admit != nil {
		if err := a.o.Admit(ctx, ref); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.admitted = ref
	a.mu.Unlock()
	return nil
}
