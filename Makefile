# zdt — see README.md. `make demo` runs the whole story on the bundled
# example; `make test` runs every test (installing the client tools the
# tests use as judges first).
SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X zdt.dev/zdt/internal/version.Version=$(VERSION)
FUZZTIME ?= 60s
FUZZ ?=
# Every build and test is static (no libc dependency): what is tested is
# what is released, and one build configuration keeps the cache warm.
export CGO_ENABLED := 0

.PHONY: build test demo bench fuzz lint tools clean release
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/zdt ./cmd/zdt

# Client tools the tests use as judges (idempotent; kept when present).
tools:
	.ci/install-tools crane oras skopeo cosign helm podman ctr kube qemu-img

test: tools
	ZDT_REQUIRE_CLIENTS=1 $(GO) test -count=1 -timeout 20m ./...

# The demo pulls from zdt serve with a stock client: crane (installed once, ~30 s).
demo: build
	.ci/install-tools crane
	./scripts/demo.sh

bench: build
	./scripts/bench.sh

# Every fuzz target (every `func FuzzXxx(f *testing.F)` in a _test.go file)
# for FUZZTIME each: 60s by default, a few seconds in CI
# (`make fuzz FUZZTIME=3s`); FUZZ=regexp runs only the matching targets.
# A crasher stops the run; go test saves its input under the package's
# testdata/fuzz/FuzzXxx/, and from then on plain `go test` (make test) runs
# it as a regression case: commit that file with the fix.
fuzz:
	@set -euo pipefail; n=0; pat='$(FUZZ)'; \
	for dir in $$(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\([A-Za-z_]+ \*testing\.F\)' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]*\([A-Za-z_]+ \*testing\.F\)' $$dir/*_test.go | sed -E 's/^func ([A-Za-z0-9_]*).*/\1/' | sort); do \
	    if [[ -n "$$pat" && ! "$$f" =~ $$pat ]]; then continue; fi; \
	    echo "fuzz $$dir $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$dir; \
	    n=$$((n+1)); \
	  done; \
	done; \
	echo "fuzz: $$n targets, $(FUZZTIME) each, no crasher"

# Static, stripped, reproducible linux/amd64 and linux/arm64 binaries in
# dist/ with SHA256SUMS; RELEASE_KEY=KEY also signs SHA256SUMS.
release:
	./scripts/release.sh

lint:
	.ci/install-tools staticcheck
	$(GO) vet ./...
	staticcheck ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

clean:
	rm -rf bin build dist
