# ambit: per-node mTLS (HBONE) tunnel for Kubernetes. `make help` lists targets.
SHELL := /bin/bash
GO    ?= go
PKGS  ?= ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the binaries into bin/.
	@mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

.PHONY: lint
lint: ## gofmt, go vet and staticcheck (pinned in go.mod's tool block).
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	@# The node daemon's packages build and vet on other platforms (Linux-only code behind build tags or stubs).
	GOOS=darwin $(GO) vet ./node/... ./redirect/... ./cmd/... ./identity/... ./tunnel/... ./bpf/...
	@if [ -x bin/helm ]; then bin/helm lint --strict charts/ambit; fi
	@# tunnel/ and identity/ stay free of Kubernetes and kernel code (architecture.md).
	@bad=$$($(GO) list -f '{{.ImportPath}} {{join .Deps " "}}' ./tunnel/... ./identity/... | tr ' ' '\n' | grep -E '^(k8s\.io/|github\.com/vishvananda/|github\.com/cilium/)' | sort -u); \
	 bad="$$bad$$($(GO) list -f '{{range .Imports}}{{if eq . "golang.org/x/sys/unix"}}{{$$.ImportPath}} imports x/sys/unix{{end}}{{end}}' ./tunnel/... ./identity/...)"; \
	 if [ -n "$$bad" ]; then echo "tunnel/ or identity/ depend on Kubernetes or kernel packages:"; echo "$$bad"; exit 1; fi

.PHONY: deps
deps: ## Install the distribution packages the tests and the cluster need (Debian, as root).
	e2e/hack/install-deps.sh

.PHONY: cluster-bins
cluster-bins: ## Build the pinned Kubernetes, etcd, CNI, helm, CoreDNS binaries into bin/ (cached).
	e2e/hack/build-bins.sh

.PHONY: generate
generate: ## Regenerate eBPF objects (clang, llvm) and CRD/DeepCopy code.
	$(GO) generate ./bpf/... ./node/apis/...

.PHONY: verify-generated
verify-generated: generate ## Fail if generated files differ from what is committed.
	git diff --exit-code -- bpf node/apis charts/ambit/crds

.PHONY: test
test: deps cluster-bins lint ## Install what is needed, lint, then every test with -race (as root: privileged and cluster tests run).
	AMBIT_CNI_PLUGINS=$${AMBIT_CNI_PLUGINS:-$(CURDIR)/bin/cni} $(GO) test -race -count=1 -timeout 45m $(PKGS)
	$(MAKE) test-interop
	$(MAKE) test-fips

.PHONY: test-fips
test-fips: ## The tunnel, identity and CA tests again under GODEBUG=fips140=only (Go's FIPS 140-3 module, non-approved crypto fails).
	GODEBUG=fips140=only AMBIT_TEST_FIPS140=only $(GO) test -race -count=1 -timeout 20m ./tunnel/ ./identity/...

.PHONY: test-interop
test-interop: ## HBONE interoperability with Istio's Go package, both directions (module interop/, kept out of ambit's go.mod).
	cd interop && $(GO) mod download && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...

.PHONY: images
images: ## Build the ambit image (ambit + ambit-cni, static, no Docker) as out/images/ambit.tar.
	$(GO) run ./e2e/images/cmd/ambit-images -out out/images $(if $(TAG),-tag $(TAG))

.PHONY: bench
bench: ## Direct TCP vs mTLS splice vs HBONE, table (BENCH_OUT=file.json also writes JSON).
	$(GO) run ./cmd/ambit-bench -out "$(BENCH_OUT)"

.PHONY: bench-all
bench-all: bench ## Also the package benchmarks: tunnel, CA, policy, tables, capture (root).
	$(GO) test -run '^$$' -bench 'Ratio|IdleMemory|Connect' -benchtime 1x -count 3 ./tunnel
	$(GO) test -run '^$$' -bench . -benchmem ./identity/... ./node/authz/
	$(GO) test -run '^$$' -bench TablesLoad -benchtime=1x ./node/tables
	$(GO) test -run '^$$' -bench 'TablesUpdate|Resolve' -benchtime=100000x ./node/tables
	$(GO) test -run '^$$' -bench Hooks -benchtime 200000x ./node/metrics
	$(GO) test -run '^$$' -bench BenchmarkConnect -benchtime 3000x ./redirect
	$(GO) test -run '^$$' -bench BenchmarkEnrol -benchtime 100x ./redirect/cniserver
	$(GO) test -run '^$$' -bench PodToPod -benchtime 1000x ./node/dataplane

.PHONY: bench-soak
bench-soak: ## Soak: SOAK_CONNS (5000) HBONE connections held SOAK_TIME (10m) with traffic, then closed; endpoints' goroutines, fds, RSS: baseline, peak, after.
	$(GO) run ./cmd/ambit-bench -soak $(or $(SOAK_CONNS),5000) -soak-time $(or $(SOAK_TIME),10m) -out "$(BENCH_OUT)"

.PHONY: bench-e2e
bench-e2e: deps cluster-bins ## Speed figures on the real two-node cluster (root): plain vs mesh, median of BENCH_ROUNDS (3) alternating rounds; BENCH_OUT=file.json, BENCH_PROFILE=dir (daemon CPU profiles).
	BENCH_OUT="$(if $(BENCH_OUT),$(abspath $(BENCH_OUT)))" BENCH_PROFILE="$(if $(BENCH_PROFILE),$(abspath $(BENCH_PROFILE)))" \
	  $(GO) test -run '^$$' -bench Mesh -benchtime 1x -timeout 50m -v ./e2e/

.PHONY: demo
demo: deps cluster-bins ## Narrated demo on a real two-node cluster (root): helm install, label, wire, metrics, policy. KEEP=1 keeps it.
	$(GO) run ./cmd/ambit-demo $(if $(filter 1,$(KEEP)),-keep)

.PHONY: demo-local
demo-local: ## Narrated demo in one process: a real CA, node certificates, a policy, HBONE between two endpoints.
	$(GO) run ./cmd/ambit-demo -local
