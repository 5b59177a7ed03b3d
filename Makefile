# zdt — see README.md. `make demo` runs the whole story on the bundled
# example; `make test` runs every test (installing the client tools the
# tests use as judges first).
SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X zdt.dev/zdt/internal/version.Version=$(VERSION)
FUZZTIME ?= 20s

.PHONY: build test demo bench fuzz lint tools clean
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/zdt ./cmd/zdt

# Client tools the tests use as judges (idempotent; kept when present).
tools:
	.ci/install-tools crane oras skopeo cosign helm podman ctr

test: tools
	ZDT_REQUIRE_CLIENTS=1 $(GO) test -count=1 -timeout 20m ./...

# The demo pulls from zdt serve with a stock client: crane (installed once, ~30 s).
demo: build
	.ci/install-tools crane
	./scripts/demo.sh

bench: build
	./scripts/bench.sh

# Short runs of every fuzz target (FUZZTIME each).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

lint:
	.ci/install-tools staticcheck
	$(GO) vet ./...
	staticcheck ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

clean:
	rm -rf bin build
