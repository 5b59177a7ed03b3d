// Package e2e runs the zdt binary the way users do and lets real clients
// (skopeo, oras, crane) judge what it produced. Tests skip when a client is
// missing unless ZDT_REQUIRE_CLIENTS=1 (set by `make test`).
package e2e
