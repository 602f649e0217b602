# Coffer: `make demo` runs the main job, `make test` runs the tests.
GO      ?= go
BIN     := bin
# Version and commit are linked into every binary (coffer version,
# coffer-server --version); without them the Go toolchain's build info is used.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X coffer/internal/version.Version=$(VERSION) -X coffer/internal/version.Commit=$(COMMIT)
export CGO_ENABLED ?= 0

.PHONY: build test test-short fuzz bench demo lint deps-docker clean images

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# Container images of coffer-server and coffer-agent from the static
# binaries, no base image, no registry: OCI archives (ctr images import) and
# docker-archives (docker load) in bin/images (see deploy/).
images: build
	$(BIN)/coffer-images --bin-dir $(BIN) --out $(BIN)/images --tag $(VERSION)

# The full suite: unit, API, CLI end-to-end and real-Docker tests, with -race
# (which needs cgo), then short fuzz runs.
test:
	CGO_ENABLED=1 $(GO) test -race -timeout 15m ./...
	# AWS KMS master key against local-kms, in a module of its own (it needs aws-sdk-go v1).
	cd test/localkms && CGO_ENABLED=1 $(GO) test -race -timeout 5m ./...
	$(MAKE) fuzz

test-short:
	$(GO) test -short ./...

FUZZTIME ?= 8s
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# Quick versions of every benchmark (a few seconds each); figures and the
# full runs are in docs/benchmarks.md.
bench:
	./scripts/bench.sh

STATICCHECK ?= staticcheck
lint:
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)

demo: build
	./scripts/demo.sh

clean:
	rm -rf $(BIN)
