GO ?= go
BIN := bin/framefarm
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.1

.PHONY: build test demo proto deps vet clean

build:
	$(GO) build -o $(BIN) ./cmd/framefarm

deps:
	bash scripts/install-deps.sh

proto:
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(CURDIR)/bin:$$PATH protoc --proto_path=proto \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	  proto/farm.proto

vet:
	$(GO) vet ./...

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

demo: deps build
	bash scripts/demo.sh

clean:
	rm -rf bin

# Benchmarks (issue 5): framefarm side by side with plain ffmpeg, cat and cp.
# bench writes BENCHMARKS.md (< 20 min on 2 cores); bench-quick is the small
# CI version (< 3 min) that fails only if the farm breaks, never on timing.
# Both install versitygw (pinned, into bin/): the bucket section's S3 server.
.PHONY: bench bench-quick
bench: deps build
	$(GO) build -o bin/loadgen ./scripts/loadgen
	GO=$(GO) bash scripts/install-versitygw.sh
	bash scripts/bench.sh

bench-quick: deps build
	$(GO) build -o bin/loadgen ./scripts/loadgen
	GO=$(GO) bash scripts/install-versitygw.sh
	bash scripts/bench.sh --quick

# fuzz runs every fuzz target for FUZZTIME each, one after the other.
FUZZTIME ?= 10s
.PHONY: fuzz
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

# Fault tests (issue 3): real kills, pauses, cut links, zombies and corrupt
# parts while the real binary renders; with issue 17 a full --data, a node's
# own machine failing, hostile HTTP/2 clients and a slow lossy link. Every
# video checked frame by frame. About 15 minutes on 2 cores; prints
# "name: N passed, M failed" per scenario. Installs iproute2, iptables and
# util-linux when missing (as root, with apt-get).
.PHONY: test-faults
test-faults: deps
	GO=$(GO) bash scripts/faults.sh

# Browser tests (issue 14): the web app in real headless Chromium (Debian's
# chromium) driven with chromedp, over real coordinator, ambassador and node
# processes. Screenshots go to $(FRAMEFARM_ARTIFACTS) (default: a folder the
# tests print). TestBrowserGridScale prints how the job page draws 1,000 sets
# under 100 simulated nodes (a table, never asserted). TestBrowserColourOfBars
# (issue 16) holds the farm's HD bars in Chromium against the source.
FRAMEFARM_ARTIFACTS ?=
.PHONY: test-browser
test-browser: deps
	bash scripts/install-deps.sh browser
	$(GO) build -o $(BIN) ./cmd/framefarm
	FRAMEFARM_ARTIFACTS=$(FRAMEFARM_ARTIFACTS) $(GO) test -count=1 -tags browser -timeout 20m -run 'Browser' -v ./cmd/framefarm/

# Deployment test (issue 15): builds the Dockerfile's image with podman (no
# registry needed: base images made with debootstrap and cached under
# ~/.cache/framefarm-deploy), renders a job on Kubernetes pods played by
# podman and on the compose file, each video checked frame by frame, and
# runs systemd-analyze verify on the units. Installs podman, runc,
# debootstrap and podman-compose; needs root.
.PHONY: test-deploy
test-deploy: deps
	GO=$(GO) bash scripts/deploy-test.sh

# Storage tests (issue 15): --out to S3 against a real versitygw process
# (pinned, from the Go module proxy, into bin/) on loopback, with real
# ffmpeg and the real binary; the copy retried across a server restart.
# gs:// and azblob:// against real emulators (fake-gcs-server from the Go
# module proxy, Azurite from npm, pinned, into bin/); FRAMEFARM_REQUIRE=1
# makes a missing emulator a failure rather than a skip.
.PHONY: test-storage
test-storage: deps
	GO=$(GO) bash scripts/install-versitygw.sh
	GO=$(GO) bash scripts/install-storage-emulators.sh
	$(GO) build -o $(BIN) ./cmd/framefarm
	$(GO) vet -tags storage ./...
	FRAMEFARM_REQUIRE=1 VERSITYGW=$(CURDIR)/bin/versitygw $(GO) test -count=1 -tags storage ./internal/storage/... ./internal/frameseq/
	FRAMEFARM_REQUIRE=1 VERSITYGW=$(CURDIR)/bin/versitygw $(GO) test -count=1 -tags storage -timeout 15m -run 'Storage' -v ./cmd/framefarm/
