# Merlin — run `make` to list the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
export GOTOOLCHAIN := local

GO       ?= go
CACHE    ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/merlin
BIN      := bin/merlin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)

GOLANGCI_VERSION := v2.15.0
GOLANGCI := $(CACHE)/bin/golangci-lint-$(GOLANGCI_VERSION)/golangci-lint

.PHONY: help build run test bench lint generate fuzz clean

help: ## list the targets
	@echo "Merlin: ship ML models from Git."
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

build: ## build bin/merlin
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/merlin

run: build ## quickstart: serve the bundled examples from a fresh git repo (Ctrl-C stops)
	./$(BIN) validate examples/...
	hack/quickstart.sh ./$(BIN)

test: ## install test dependencies (apt, kube-apiserver) and run every test
	@assets=$$(hack/test-deps.sh | tail -n 1); \
	 echo "KUBEBUILDER_ASSETS=$$assets"; \
	 test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }; \
	 $(GO) vet ./...; \
	 KUBEBUILDER_ASSETS=$$assets $(GO) test -count=1 -timeout 25m ./...

bench: ## print the performance figures (about 10 minutes; uses real model servers and git daemon)
	@hack/test-deps.sh --no-kube
	@echo "== model server: iris predict through Go's HTTP client"
	$(GO) test ./serving/local/modelserver -run '^$$' -bench BenchmarkPredict -benchtime 3s
	@echo "== router overhead"
	$(GO) test ./serving/local -run '^$$' -bench BenchmarkRouterOverhead -benchtime 1x | grep -v '^[0-9/: ]*INFO'
	@echo "== daemon memory: 10 concurrent 60 MB predictions"
	$(GO) test ./e2e -run '^$$' -bench BenchmarkLargeRequestsMemory -benchtime 1x -timeout 10m | grep -v '^[0-9/: ]*INFO'
	@echo "== restart: kill -9 of a supervised daemon under 50 rps"
	$(GO) test ./daemon -run '^TestSupervisedRestart$$' -count=1 -v -timeout 10m | grep -E 'restart[,:]|the restarted daemon|^(ok|FAIL|---)'
	@echo "== Open Inference Protocol conformance of the router"
	$(GO) test ./serving/local -run '^TestProtocol$$/OIPConformance' -count=1 -v | grep -E 'OIP conformance|^(ok|FAIL)'
	@echo "== webhooks: acknowledgement under bursts; push webhook → fetch started"
	$(GO) test ./webhooks -run '^$$' -bench BenchmarkAck -benchtime 20x | grep -E '^Benchmark|acknowledgement over'
	$(GO) test ./daemon -run '^TestPushWebhook$$' -count=1 -v | grep -E 'push webhook figures|^(ok|FAIL|---)'
	@echo "== pull requests: event → preview serving and comment posted; API budget"
	$(GO) test ./daemon -run '^(TestPullRequestPreview|TestPullRequestBudgetFaultsMerge)$$' -count=1 -v -timeout 10m | grep -E 'pull request figures|^(ok|FAIL|---)'
	@echo "== commit → serving"
	$(GO) test ./e2e -run '^$$' -bench BenchmarkCommitToServing -benchtime 1x -timeout 15m
	@echo "== rollbacks"
	$(GO) test ./e2e -run '^$$' -bench BenchmarkRollback -benchtime 1x -timeout 30m

lint: $(GOLANGCI) ## run golangci-lint (installed at a pinned version)
	$(GOLANGCI) run ./...

$(GOLANGCI):
	GOBIN=$(dir $@) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

generate: ## regenerate schema/merlin.schema.json
	$(GO) generate ./...

fuzz: ## fuzz the manifest parser for a minute
	$(GO) test ./manifest/ -run '^$$' -fuzz FuzzParse -fuzztime 60s

clean: ## remove build output
	rm -rf bin
