// Package testregistry runs distribution's registry (v3, in-memory storage)
// in-process on 127.0.0.1 for tests: plain HTTP or TLS, optionally behind
// htpasswd basic auth, with request counters and an optional middleware
// (throttling, fault injection). It also pushes random multi-arch images.
// Only tests import it.
package testregistry
