# codervpn build, test and release targets. See README.md.
SHELL := /bin/bash
GO ?= go
# Expanded once: a commit made while a build runs must not change the
# version between the artefacts and their checks.
ifndef VERSION
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
BUILD := build
PROTOC ?= protoc
PROTOC_GEN_GO := $(BUILD)/protoc-gen-go
# Packages whose tests start goroutines in parallel get the race detector.
RACE_PKGS ?= ./...
FUZZTIME ?= 10s

UNAME_S := $(shell uname -s)
LDFLAGS := -s -w -X github.com/codervpn/codervpn/internal/buildinfo.Version=$(VERSION)
CC ?= cc

.PHONY: install install-files
.PHONY: all build dylib dlhost codervpn demo-deps test unit fuzz bench soak stoprace demo proto check-proto lint vet-darwin \
	dylib-darwin codervpn-darwin check-darwin

all: build

build:
	$(GO) build ./...

ifeq ($(UNAME_S),Darwin)
# dylib: a universal (arm64 + amd64) libcodervpn.dylib with an Info.plist in
# __TEXT,__info_plist, so the NetworkExtension can read the version after it
# has verified the signature. Sign it with scripts/sign-macos.sh.
MACOSX_DEPLOYMENT_TARGET ?= 12.0
export MACOSX_DEPLOYMENT_TARGET
dylib:
	@mkdir -p $(BUILD)
	sed -e 's/@VERSION@/$(VERSION)/g' scripts/Info.plist.in > $(BUILD)/Info.plist
	for arch in arm64 amd64; do \
		CGO_ENABLED=1 GOOS=darwin GOARCH=$$arch \
		CGO_CFLAGS="-mmacosx-version-min=$(MACOSX_DEPLOYMENT_TARGET)" \
		CGO_LDFLAGS="-mmacosx-version-min=$(MACOSX_DEPLOYMENT_TARGET)" \
		$(GO) build -buildmode=c-shared -trimpath \
			-ldflags '$(LDFLAGS) -extldflags "-sectcreate __TEXT __info_plist $(CURDIR)/$(BUILD)/Info.plist"' \
			-o $(BUILD)/libcodervpn-$$arch.dylib ./cmd/dylib || exit 1; \
	done
	lipo -create -output $(BUILD)/libcodervpn.dylib $(BUILD)/libcodervpn-arm64.dylib $(BUILD)/libcodervpn-amd64.dylib
	cp cmd/dylib/codervpn.h $(BUILD)/codervpn.h
	rm -f $(BUILD)/libcodervpn-arm64.dylib $(BUILD)/libcodervpn-amd64.dylib $(BUILD)/libcodervpn-arm64.h $(BUILD)/libcodervpn-amd64.h
else
dylib:
	@mkdir -p $(BUILD)
	CGO_ENABLED=1 $(GO) build -buildmode=c-shared -trimpath -ldflags '$(LDFLAGS)' \
		-o $(BUILD)/libcodervpn.so ./cmd/dylib
	cp cmd/dylib/codervpn.h $(BUILD)/codervpn.h
	rm -f $(BUILD)/libcodervpn.h
endif

# The header that ships is cmd/dylib/codervpn.h, written by hand; cgo's
# generated one (GoString, _Complex, #line directives) is not. The library's
# build checks every export against it: the cgo preamble includes it.

# dlhost: the C host that dlopens the library the way the NetworkExtension does.
dlhost:
	@mkdir -p $(BUILD)
	$(CC) -Wall -Wextra -O2 -I cmd/dylib -o $(BUILD)/dlhost scripts/dlhost.c -ldl -lpthread

$(PROTOC_GEN_GO): go.mod go.sum
	@mkdir -p $(BUILD)
	$(GO) build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

# proto regenerates proto/vpn.pb.go with Debian's protoc and the protoc-gen-go
# pinned by the tool directive in go.mod.
proto: $(PROTOC_GEN_GO)
	$(PROTOC) --plugin=protoc-gen-go=$(PROTOC_GEN_GO) -I proto \
		--go_out=proto --go_opt=paths=source_relative proto/vpn.proto

# check-proto fails when the committed proto/vpn.pb.go is not what `make proto`
# generates from proto/vpn.proto.
check-proto: $(PROTOC_GEN_GO)
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(PROTOC) --plugin=protoc-gen-go=$(PROTOC_GEN_GO) -I proto \
		--go_out=$$tmp --go_opt=paths=source_relative proto/vpn.proto || exit 1; \
	if ! diff -u proto/vpn.pb.go $$tmp/vpn.pb.go; then \
		echo "proto/vpn.pb.go is stale: run 'make proto' and commit the result" >&2; exit 1; \
	fi; echo "proto/vpn.pb.go is up to date"

lint: vet-darwin
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# vet-darwin type-checks everything that builds without cgo for the macOS
# target, so darwin-only files are compiled on every Linux run.
vet-darwin:
	GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) vet $$(GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) list -f '{{if not .CgoFiles}}{{.ImportPath}}{{end}}' ./...)

unit:
	$(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)

# fuzz runs every fuzz target for FUZZTIME each (seed corpora always run in unit).
# A run that fails without writing a failing input to testdata is Go 1.26's
# fuzz-deadline race (golang/go#75804, fixed in Go 1.27), not a finding: it
# is run once more, and fails the build if it fails again. A real crasher
# always leaves its input in testdata/fuzz/<target>.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f for $(FUZZTIME)"; \
			before=$$(ls $$dir/testdata/fuzz/$$f 2>/dev/null | wc -l); \
			if ! $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; then \
				after=$$(ls $$dir/testdata/fuzz/$$f 2>/dev/null | wc -l); \
				if [ "$$after" != "$$before" ]; then \
					echo "$$f found a failing input: see $$dir/testdata/fuzz/$$f" >&2; exit 1; \
				fi; \
				echo "$$f failed without a failing input (golang/go#75804); running it again" >&2; \
				$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
			fi; \
		done; \
	done

# On Linux every `make test` builds the macOS artefacts and checks them.
ifeq ($(UNAME_S),Linux)
CHECK_DARWIN := check-darwin
endif

test: check-proto lint unit fuzz $(CHECK_DARWIN)

# dylib-darwin: build/darwin/libcodervpn.dylib (universal, macOS 12+, the
# version in __TEXT,__info_plist, stripped) and build/darwin/codervpn.h, cross-
# built on Linux: cgo links through `zig cc`, fetched once by
# scripts/fetch-darwin-toolchain.sh into build/darwin-toolchain. Needs npm
# and llvm-14 (.ci/run installs them). A Mac builds it with Xcode: make dylib.
dylib-darwin:
	VERSION='$(VERSION)' GO='$(GO)' scripts/build-darwin.sh dylib

# codervpn-darwin: build/darwin/codervpn-arm64 and -amd64, the tunnel process
# Coder Desktop spawns (`codervpn vpn-daemon run`); pure Go.
codervpn-darwin:
	VERSION='$(VERSION)' GO='$(GO)' scripts/build-darwin.sh codervpn

# check-darwin reads the darwin artefacts (internal/darwincheck): slices and
# file types, minimum macOS, exports, linked libraries, Info.plist, strip and
# signature, and the header against the one the Linux build ships
# (cmd/dylib/codervpn.h). It fails on any.
check-darwin: dylib-darwin codervpn-darwin
	CODERVPN_DARWIN_DIR='$(CURDIR)/$(BUILD)/darwin' CODERVPN_DARWIN_VERSION='$(VERSION)' \
	CODERVPN_LINUX_HEADER='$(CURDIR)/cmd/dylib/codervpn.h' \
		$(GO) test -count=1 -v -run '^TestArtefacts$$' ./internal/darwincheck

# soak runs one tunnel for DURATION (default 2m, what CI runs after
# `make test`; 30m for the README's figures) under the faults of a laptop's
# day and prints RSS, goroutines and fds each minute and their slope (vpnlib
# TestSoak; slopes are judged from 10m on).
DURATION ?= 2m
soak:
	CODERVPN_SOAK_DURATION=$(DURATION) $(GO) test -count=1 -timeout 6h -run '^TestSoak$$' -v ./vpnlib/

# stoprace runs each Stop race STOPRACE_N times under -race (1,000 for the
# README's figure; unit runs 10).
STOPRACE_N ?= 1000
stoprace:
	CODERVPN_STOPRACE_N=$(STOPRACE_N) $(GO) test -race -count=1 -timeout 3h -run '^TestStopRaces$$' -v ./vpnlib/

# bench prints the results table of ./bench (every figure beside its baseline,
# measured in the same run; see bench/RESULTS.md), then tunfd's per-packet
# micro-benchmarks. BENCH_MARKDOWN=file also writes the table as Markdown.
bench: dylib dlhost
	$(GO) build -o $(BUILD)/codertunnel ./bench/internal/codertunnel
	CODERVPN_LIB=$(CURDIR)/$(BUILD)/libcodervpn.so CODERVPN_DLHOST=$(CURDIR)/$(BUILD)/dlhost \
	CODERVPN_CODERTUNNEL=$(CURDIR)/$(BUILD)/codertunnel \
	CODERVPN_BENCH_MARKDOWN=$(BENCH_MARKDOWN) \
		$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./tunfd

# codervpn: the Linux command (up, daemon, demo), next to the library and the
# C host so that it finds them.
codervpn:
	@mkdir -p $(BUILD)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILD)/codervpn ./cmd/codervpn

# demo-deps says what to install instead of failing deep inside a build.
demo-deps:
	@command -v $(CC) >/dev/null || { echo "make demo needs a C compiler: apt-get install gcc libc6-dev" >&2; exit 1; }
	@if [ "$$(id -u)" = 0 ]; then for t in ip curl; do command -v $$t >/dev/null || \
		echo "note: '$$t' is missing, so the demo takes the userspace path; apt-get install iproute2 curl for the kernel path" >&2; done; fi

# demo: an embedded Coder deployment and a real tunnel through libcodervpn.so
# loaded by the C host. As root: a TUN in a private network namespace and curl
# inside it; otherwise the userspace path. Removes everything it made.
demo: demo-deps dylib dlhost codervpn
	$(BUILD)/codervpn demo --lib $(BUILD)/libcodervpn.so --dlhost $(BUILD)/dlhost

# install: the command, the library and its header, the C host, the systemd
# unit and the sysusers file (the codervpn group). Honours DESTDIR (staging
# for packages), PREFIX, UNITDIR and SYSUSERSDIR. Then, as root:
#   systemd-sysusers && systemctl daemon-reload && systemctl enable --now codervpn
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
LIBEXECDIR ?= $(PREFIX)/libexec/codervpn
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
install: codervpn dylib dlhost install-files

# install-files installs what the build left in build/, building nothing.
install-files:
	install -Dm755 $(BUILD)/codervpn $(DESTDIR)$(BINDIR)/codervpn
	install -Dm755 $(BUILD)/libcodervpn.so $(DESTDIR)$(LIBDIR)/libcodervpn.so
	install -Dm644 $(BUILD)/codervpn.h $(DESTDIR)$(INCLUDEDIR)/codervpn.h
	install -Dm755 $(BUILD)/dlhost $(DESTDIR)$(LIBEXECDIR)/dlhost
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed -e 's|@BINDIR@|$(BINDIR)|g' scripts/codervpn.service > $(DESTDIR)$(UNITDIR)/codervpn.service
	chmod 644 $(DESTDIR)$(UNITDIR)/codervpn.service
	install -m644 scripts/codervpn.sysusers $(DESTDIR)$(SYSUSERSDIR)/codervpn.conf
