# mpaxos — build, run, test. Everything a fresh machine with Go needs is here.
#
#   make run     build, spawn a local 3-replica cluster (fsync on), drive it ~10 s, print results
#   make test    the whole suite: lint, every test, the race detector on concurrent packages
#
# Long runs live behind their own targets: sim-long, chaos-long, bench, bench-rtt, fuzz-long,
# profile.

GO        ?= go
BIN       := bin
GOFLAGS   ?=
# Packages whose code runs goroutines concurrently: tested under the race detector.
RACE_PKGS := ./internal/... ./wal/... ./netio/... ./batching/... ./pipeline/... ./client/... ./bench/... ./perf/... ./cmd/... \
             ./tests/chaos/cluster ./tests/chaos/faultproxy ./tests/chaos/history ./tests/chaos/netns \
             ./tests/chaos/replicalog . ./examples/...
# make test's chaos run: every fault scenario once (~2 min), then rounds of random faults.
CHAOS_DURATION ?= 3m
# Pure, single-goroutine packages: tested without -race (the simulator is CPU-bound).
PURE_PKGS := ./codec/... ./core/...

FUZZTIME  ?= 10s
SEEDS     ?= 20000
SIM_SEEDS ?= 5000
DURATION  ?= 10m
RUN_ARGS  ?= --clients 64 --inflight 64 --payload 16 --duration 10s --warmup 2s

.PHONY: all deps build run test test-pure test-race test-chaos test-hostile lint fmt vet fuzz fuzz-long bench bench-e2e \
        bench-rtt sim-long chaos-long planted profile clean test-netfuzz netfuzz

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS) -o $(BIN)/mpaxos ./cmd/mpaxos
	$(GO) build $(GOFLAGS) -o $(BIN)/mpaxos-bench ./cmd/mpaxos-bench

# The first README command: a working replicated log within a minute of cloning.
run: build
	$(BIN)/mpaxos-bench --spawn 3 --fsync=true --mpaxos-bin $(BIN)/mpaxos \
		$(RUN_ARGS) --report $(BIN)/report.html
	@echo "HTML report: $(BIN)/report.html (open it in a browser, it works offline)"

test: deps lint test-pure test-race test-chaos test-hostile test-netfuzz
	@echo "make test: all green"

# core's expensive assertions (core/invariants.go) are on for the pure packages: every
# transcript, simulator seed and explorer state is checked against them. The simulator runs
# SIM_SEEDS seeds (each its own fault mix) per cluster size, 3 and 5 replicas.
test-pure:
	SIM_SEEDS=$(SIM_SEEDS) $(GO) test -count=1 -timeout 10m -tags invariants $(PURE_PKGS)

test-race:
	$(GO) test -count=1 -race -timeout 12m $(RACE_PKGS)

# Real processes under faults, checked for linearizability (tests/chaos). A failure prints the
# seed and the command that replays it; artifacts land in tests/chaos/artifacts/.
test-chaos: deps
	MPAXOS_CHAOS=1 $(GO) test -count=1 -race -timeout 20m ./tests/chaos -duration $(CHAOS_DURATION)

# Attacks on a live 3-replica cluster under load (tests/hostile, ~50 s). Not under -race:
# the flood holds ~16,000 connections, over the race detector's goroutine limit.
test-hostile: build
	MPAXOS_HOSTILE=1 $(GO) test -count=1 -timeout 5m -v ./tests/hostile

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(find . -name '*.go' -not -path './bin/*')

vet:
	$(GO) vet ./...

# Every fuzz target, each for FUZZTIME (default 10 s). fuzz-long: FUZZTIME=10m.
fuzz:
	@scripts/fuzz-all.sh $(FUZZTIME)

fuzz-long:
	@scripts/fuzz-all.sh 10m

# Component benchmarks (codec, batching, wal, netio, ...) then the end-to-end headline runs:
# 16 B and 1 KiB closed loop at 64 x 64, then the open loop at half and at a tenth of 1 M/s.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./codec/... ./batching/... ./wal/... ./netio/... ./pipeline/...
	$(MAKE) bench-e2e

bench-e2e: build
	$(BIN)/mpaxos-bench --spawn 3 --fsync=true --mpaxos-bin $(BIN)/mpaxos \
		--clients 64 --inflight 64 --payload 16 --duration 20s --warmup 3s
	$(BIN)/mpaxos-bench --spawn 3 --fsync=true --mpaxos-bin $(BIN)/mpaxos \
		--clients 64 --inflight 64 --payload 1024 --duration 20s --warmup 3s
	$(BIN)/mpaxos-bench --spawn 3 --fsync=true --mpaxos-bin $(BIN)/mpaxos \
		--clients 16 --inflight 256 --payload 16 --rate 500000 --duration 20s --warmup 15s \
		--open-loop-tick 1ms
	$(BIN)/mpaxos-bench --spawn 3 --fsync=true --mpaxos-bin $(BIN)/mpaxos \
		--clients 8 --inflight 256 --payload 16 --rate 100000 --duration 20s --warmup 3s

# Throughput and latency at 0, 5 and 25 ms round trips: replicas and the load generator in
# network namespaces joined by the userspace packet emulator (tests/rtt, about 2 minutes).
bench-rtt: deps
	MPAXOS_RTT=1 $(GO) test -count=1 -timeout 20m -v -run . ./tests/rtt

# The deterministic simulator over many more seeds than make test runs (SEEDS per cluster
# size; prints runs/s). A failure prints the seed's drawn fault mix and the command that replays it.
sim-long:
	$(GO) test -count=1 -timeout 0 -tags invariants -v ./core/sim -run 'TestSimLong' -seeds $(SEEDS)

# The exhaustive explorer past make test's bound of 9 events (core/explore): every path of
# EXPLORE_DEPTH events (10: 9.5 million worlds, ~1.5 CPU-minutes, 1.2 GB). EXPLORE_ARGS adds
# -drops, -events deliver,persist,..., -ticks N, -crashes N, -proposals N, -campaigns N,
# -states N, -time D.
EXPLORE_DEPTH ?= 10
.PHONY: explore-deep
explore-deep:
	$(GO) test -count=1 -timeout 0 -tags invariants -v ./core/explore -run 'TestExploreDeep' -depth $(EXPLORE_DEPTH) $(EXPLORE_ARGS)

# Plants each bug of tests/planted in core (go -overlay; the tree is not edited) and runs the
# transcripts, the simulator and the explorer against it: every one must be caught.
planted:
	MPAXOS_PLANTED=1 $(GO) test -count=1 -timeout 0 -v ./tests/planted

# The network fuzzer (tests/netfuzz): random and mutated frames from six attackers against a
# live 3-replica cluster of real processes while a client appends; no crash, hang, stall or
# lost write. make test runs it for 15 s; make netfuzz for DURATION (default 10m, one core).
test-netfuzz:
	$(GO) test -count=1 -race -timeout 5m ./tests/netfuzz -duration 15s

netfuzz:
	$(GO) test -count=1 -timeout 0 -v ./tests/netfuzz -run TestNetworkFuzz -duration $(DURATION)

# Fault tests on real processes for as long as asked (DURATION=1h).
chaos-long: deps build
	$(GO) test -count=1 -timeout 0 -v ./tests/chaos -run 'TestChaosLong' -duration $(DURATION)

# System tools the fault tests use: ip and tc (network namespaces) from iproute2. Installed
# only where missing, so a machine that has them is not touched.
deps:
	@command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || \
		{ echo "installing iproute2 (ip, tc) for the network-namespace tests"; \
		  (apt-get update -qq && apt-get install -y -qq iproute2) >/dev/null; }

# A spawned cluster under load with profiles of every replica in perf-out/.
profile: build
	$(BIN)/mpaxos-bench --spawn 3 --fsync=true --mpaxos-bin $(BIN)/mpaxos \
		--clients 64 --inflight 64 --payload 16 --duration 15s --warmup 3s \
		--profile cpu,heap,mutex,block,goroutine --profile-dir perf-out

clean:
	rm -rf $(BIN) perf-out
	$(GO) clean -testcache
