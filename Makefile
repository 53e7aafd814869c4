# Thin targets; the work is in go test and scripts/.
GO      ?= go
BIN     := bin/oauthfs
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

.PHONY: build demo test bench lint fmt clean deps fuzz deb

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/oauthfs

# demo builds oauthfs and runs 'oauthfs dev' at ./oauth: a local OAuth
# provider, a broker and a mount, signed in. Ctrl-C stops and cleans up.
demo: build
	scripts/demo-deps
	$(BIN) dev

# deb builds bin/oauthfs_VERSION_ARCH.deb with dpkg-deb: the binary, the
# systemd units, /etc/oauthfs/config.toml and shell completion
# (docs/deploy.md).
deb: build
	VERSION=$(VERSION) scripts/build-deb $(BIN) bin

# deps installs what the tests need when it is missing (Debian packages).
deps:
	scripts/test-deps

# test runs every test, with the race detector, against real FUSE mounts,
# in a temporary directory of its own that must be empty afterwards, and
# then each fuzz target briefly. Set OAUTHFS_REQUIRE_FUSE=1 to make a
# missing /dev/fuse a failure.
test: deps
	$(GO) vet ./...
	@mkdir -p bin && scripts/check-no-mounts --save bin/mounts-before
	@tmp=$$(mktemp -d) && chmod 1777 $$tmp && \
	  TMPDIR=$$tmp OAUTHFS_RACE=1 $(GO) test -race -count=1 -timeout 20m ./... && \
	  scripts/check-no-leftovers $$tmp
	GO=$(GO) r/run-tests.sh
	GO=$(GO) python/run-tests.sh
	scripts/check-no-mounts bin/mounts-before
	FUZZSCALE=1 scripts/fuzz

# fuzz runs each fuzz target for about a minute (FUZZSCALE=20 times the
# executions make test runs; see scripts/fuzz).
fuzz:
	scripts/fuzz

# bench measures oauthfs against tmpfs and the other floors of
# docs/performance.md in one run, and prints the table of ratios.
bench:
	$(GO) test -run '^$$' -bench 'OpenReadClose' -count 7 -benchtime 3000x ./test/bench/ | tee bench.out
	$(GO) test -run '^$$' -bench 'Cat' -count 5 -benchtime 300x ./test/bench/ | tee -a bench.out
	$(GO) test -run '^$$' -bench 'LsL|Index' -count 5 -benchtime 20x ./test/bench/ | tee -a bench.out
	$(GO) test -run '^$$' -bench 'ReadersAcrossRefresh|Storm|ProviderConns|SystemUsers' -count 3 -benchtime 1x ./test/bench/ | tee -a bench.out
	$(GO) test -run '^$$' -bench BenchmarkSave -count 3 -benchtime 300x ./broker/ | tee -a bench.out
	$(GO) test -run '^$$' -bench BenchmarkStore -count 5 -benchtime 300x ./broker/ | tee -a bench.out
	@echo
	@awk -f test/bench/ratios.awk bench.out

# lint checks what the compiler does not: vet, gofmt, go.mod tidy,
# staticcheck with every check, code nothing reaches (deadcode; examples
# without output are compiled, never run, so it does not count them), and
# types and constants nothing uses (scripts/unused.go).
lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (echo "gofmt would change:"; gofmt -l .; exit 1)
	$(GO) mod tidy -diff
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -checks all ./...
	@out=$$($(GO) run golang.org/x/tools/cmd/deadcode@v0.38.0 -test ./... | grep -v ': unreachable func: Example'); \
	  test -z "$$out" || (echo "unreachable code:"; echo "$$out"; exit 1)
	$(GO) run scripts/unused.go

fmt:
	gofmt -w .

clean:
	rm -rf bin bench.out
