# onetun in Swift. The two commands a fresh Debian machine needs (as root): `make demo` and `make test`.
PREFIX ?= /usr/local
APT_PACKAGES := libuv1-dev libsodium-dev wireguard-go wireguard-tools iproute2 iputils-ping pkg-config python3 curl procps iperf3 tshark dnsmasq-base openssh-server openssh-client binutils dpkg-dev lintian systemd bash-completion prometheus
SWIFT ?= swift
FUZZ_SECONDS ?= 60
FUZZ_CHECK_SECONDS ?= 3
FUZZ_LONG_RUNS ?= 10000000
FUZZ_LONG_SECONDS ?= 3600

.PHONY: all deps build release dist deb test demo fuzz fuzz-build fuzz-check fuzz-long bench bench-net bench-micro bench-memory bench-instr bench-flood bench-handshakes soak docs install clean

all: build

# Installs what is missing (needs root); a no-op when everything is there.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# onetun for machines without Swift (.build/dist/onetun): the Swift standard library, libuv, libsodium,
# libstdc++ and libgcc linked statically, only glibc left; packed with the manual page, the completions,
# the systemd unit and README.md into onetun-VERSION-linux-ARCH.tar.gz (a /usr/local tree).
dist: deps
	SWIFT=$(SWIFT) bash scripts/dist.sh

# A Debian package of that binary (dpkg-deb): onetun_VERSION-REVISION_ARCH.deb.
deb: dist
	bash scripts/deb.sh

# The end-to-end tests run the release onetun (ONETUN_BINARY): they move hundreds of MiB. The packaging
# tests take the tarball and the package of `make deb` from here. Then the fuzz check.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) build -c release --product onetun
	$(MAKE) --no-print-directory deb
	ONETUN_BINARY=$(CURDIR)/.build/release/onetun $(SWIFT) test
	$(MAKE) --no-print-directory fuzz-check

demo: release
	bash scripts/demo.sh

fuzz-build: deps
	cd fuzz && $(SWIFT) build -c release --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address

# Runs every fuzz target for FUZZ_SECONDS each, from its seed corpus.
fuzz: fuzz-build
	bash fuzz/run.sh -s $(FUZZ_SECONDS)

# Each target until FUZZ_LONG_RUNS executions or FUZZ_LONG_SECONDS, whichever comes first (FUZZ_TARGETS:
# a comma-separated subset).
FUZZ_TARGETS ?=
fuzz-long: fuzz-build
	bash fuzz/run.sh -r $(FUZZ_LONG_RUNS) -s $(FUZZ_LONG_SECONDS) $(if $(FUZZ_TARGETS),-t $(FUZZ_TARGETS))

# Part of `make test`: the targets built the plain way (debug) must each execute inputs for a few seconds.
fuzz-check: deps
	SWIFT=$(SWIFT) bash fuzz/check.sh $(FUZZ_CHECK_SECONDS)

# The network benchmark (loopback, wireguard-go + kernel TCP, onetun; iperf3, connections/s, RTT, RSS,
# CPU; directly and through netem-relay: 50 ms RTT, 1 % loss, 2 % loss with reordering and duplication)
# then the micro-benchmarks and the memory benchmark. Not part of `make test`.
bench: bench-net bench-micro bench-memory bench-handshakes

# onetun as it ships (make dist: the Swift runtime linked in, which also keeps about 4 MiB of shared
# library pages out of its resident size).
bench-net: dist
	$(SWIFT) build -c release --product netem-relay
	python3 scripts/bench.py --onetun .build/dist/onetun

# Floods at onetun's endpoint socket (garbage, initiations, unknown and real receiver indices, replays, from
# strangers and from the peer's forged address) during an iperf3 upload through it: throughput against a
# baseline, onetun's CPU and RSS, the session checked after each; then the same floods against the reference
# (wireguard-go + kernel TCP), whose failed rows do not stop make. Root; about 7 minutes; not part of `make test`.
bench-flood: release
	python3 scripts/flood.py --onetun .build/release/onetun
	-python3 scripts/flood.py --against wireguard-go

# A listening onetun takes the handshakes of 100 wireguard-go peers at once (root, under a minute).
bench-handshakes: release
	python3 scripts/bench_handshakes.py --onetun .build/release/onetun

bench-micro: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark

# onetun's resident memory (as root, namespaces + wireguard-go): 10,000 idle connections in five waves (open,
# then all closed; targets <= 100 MiB open, back within 10 % of idle), and 20 clients that never read beside a
# measured 16 MiB download (targets: >= 0.7 of its rate alone, < 4.5 MiB per stalled client). Not part of
# `make test`. A quick run: make bench-memory BENCH_MEMORY_ARGS="--connections 2000 --waves 2"
BENCH_MEMORY_ARGS ?=
bench-memory: release
	python3 scripts/bench_memory.py --onetun .build/release/onetun $(BENCH_MEMORY_ARGS)

# Mixed load for SOAK_MINUTES through netem-relay (10 ms each way, 1 % loss, 1 % reordering) against a
# wireguard-go peer: every transfer SHA-256-checked, UDP byte-checked, onetun's RSS sampled; fails on any
# mismatch or error, if onetun dies, or if its RSS grows by 5 % or more after warm-up. Not part of `make test`.
SOAK_MINUTES ?= 30
soak: release
	python3 scripts/soak.py --onetun .build/release/onetun --relay .build/release/netem-relay --minutes $(SOAK_MINUTES)

# Instructions per MiB of a fixed in-memory transfer through two TunnelCores (callgrind): an exact count,
# so a regression shows as a number that does not depend on the machine's noise. Installs valgrind if missing.
BENCH_INSTR_MIB ?= 64
bench-instr: deps
	@command -v valgrind >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind)
	$(SWIFT) build -c release --product core-transfer
	python3 scripts/bench_instr.py --binary .build/release/core-transfer --mib $(BENCH_INSTR_MIB)

# DocC for the embeddable core (article: "Driving the core"); fails on any documentation warning.
docs: deps
	$(SWIFT) package generate-documentation --target OneTunCore --warnings-as-errors

# The binary, the manual page, the bash, zsh (site-functions) and fish completions, and the systemd unit
# (PREFIX/lib/systemd/system/onetun@.service, running PREFIX/bin/onetun).
install: release
	bash scripts/install-files.sh .build/release/onetun "$(DESTDIR)$(PREFIX)" "$(PREFIX)"

clean:
	rm -rf .build fuzz/.build Benchmarks/.build
	rm -f onetun-*-linux-*.tar.gz onetun_*.deb
