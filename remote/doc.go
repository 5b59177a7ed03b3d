// Package remote configures zdt's registry clients, for bundle creation
// (zdt.dev/zdt/bundle/build) and `zdt push` (zdt.dev/zdt/registry) alike:
// the --registry-config file (RegistryConfig: per-host CA, insecure TLS,
// plain HTTP, basic auth), credentials from the Docker config, and Remotes,
// which hands out oras-go repositories and HTTP clients with one
// connection pool and token cache per host, retries with backoff on 429
// and 5xx, and a stall timeout on every response (StallError).
package remote
