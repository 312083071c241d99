# ambit: per-node mTLS (HBONE) tunnel for Kubernetes. `make help` lists targets.
SHELL := /bin/bash
GO    ?= go
PKGS  ?= ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the binaries into bin/.
	@mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

.PHONY: lint
lint: ## gofmt, go vet and staticcheck (pinned in go.mod's tool block).
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

.PHONY: test
test: lint ## Lint, then every test with the race detector (run as root: privileged tests need it).
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

.PHONY: bench
bench: ## Benchmarks: direct TCP vs mTLS splice vs HBONE (BENCH_OUT=file.json for JSON).
	$(GO) run ./cmd/ambit-bench -out "$(BENCH_OUT)"

.PHONY: demo
demo: ## Narrated demo: a real CA, node certificates, a policy, HBONE between two endpoints.
	$(GO) run ./cmd/ambit-demo
