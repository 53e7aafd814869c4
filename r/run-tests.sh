#!/usr/bin/env bash
# run-tests.sh: R CMD check of the R package r/oauthfs, whose tests run
# against a live 'oauthfs dev' mount (Demo signed in, Other not).
#
# It builds oauthfs into a temporary directory (or uses $OAUTHFS_BIN),
# starts 'oauthfs dev --token-lifetime 1m' there with a private
# XDG_RUNTIME_DIR, waits for its guide ("Press Ctrl-C"), runs
# R CMD build and R CMD check --no-manual with OAUTHFS_MOUNT set (and
# OAUTHFS_BROKER, with oauthfs on PATH, for the broker's tokens), stops dev
# with SIGINT and removes everything. It fails when the check has an ERROR
# or a WARNING (NOTEs pass), or when dev does not stop cleanly.
#
# Without FUSE the check runs with no mount, so the live tests skip; under
# OAUTHFS_REQUIRE_FUSE=1 a missing FUSE is a failure instead.
#
# Needs Debian packages r-base-core, r-cran-jsonlite and r-cran-testthat.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

tmp=$(mktemp -d)
dev=""
cleanup() {
	if [ -n "$dev" ] && kill -0 "$dev" 2>/dev/null; then
		kill -INT "$dev"
		wait "$dev" || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# FUSE, as internal/fusetest decides it.
why=""
if [ ! -e /dev/fuse ]; then
	why="no /dev/fuse"
elif [ "$(id -u)" != 0 ] && ! command -v fusermount3 >/dev/null; then
	why="not root and no fusermount3 (install fuse3)"
fi
if [ -n "$why" ] && [ "${OAUTHFS_REQUIRE_FUSE:-}" = 1 ]; then
	echo "r/run-tests.sh: FUSE is required (OAUTHFS_REQUIRE_FUSE=1) but unavailable: $why" >&2
	exit 1
fi

if [ -z "$why" ]; then
	bin=${OAUTHFS_BIN:-}
	if [ -z "$bin" ]; then
		bin=$tmp/oauthfs
		(cd "$root" && ${GO:-go} build -o "$bin" ./cmd/oauthfs)
	fi
	mkdir -m 0700 "$tmp/run"
	XDG_RUNTIME_DIR=$tmp/run "$bin" dev --token-lifetime 1m "$tmp/oauth" >"$tmp/dev.out" 2>"$tmp/dev.err" &
	dev=$!
	for _ in $(seq 300); do
		grep -q "Press Ctrl-C" "$tmp/dev.out" && break
		kill -0 "$dev" 2>/dev/null || break
		sleep 0.1
	done
	if ! grep -q "Press Ctrl-C" "$tmp/dev.out"; then
		echo "r/run-tests.sh: oauthfs dev did not start:" >&2
		cat "$tmp/dev.out" "$tmp/dev.err" >&2
		exit 1
	fi
	export OAUTHFS_MOUNT=$tmp/oauth
	# getDelegatedAzureToken asks the broker with the oauthfs command.
	sock=$(sed -n 's/.*export OAUTHFS_BROKER=\([^ ]*\).*/\1/p' "$tmp/dev.out" | head -1)
	export OAUTHFS_BROKER=${sock:-$tmp/run/oauthfs/broker.sock}
	mkdir "$tmp/path"
	ln -s "$bin" "$tmp/path/oauthfs"
	export PATH=$tmp/path:$PATH
else
	echo "r/run-tests.sh: FUSE unavailable ($why): the live tests skip"
	unset OAUTHFS_MOUNT
fi

mkdir "$tmp/check" "$tmp/tmp"
status=0
(
	cd "$tmp/check"
	export TMPDIR=$tmp/tmp _R_CHECK_FORCE_SUGGESTS_=false
	R CMD build --no-manual "$root/r/oauthfs"
	R CMD check --no-manual oauthfs_*.tar.gz
) || status=$?
log=$tmp/check/oauthfs.Rcheck/00check.log
out=$(ls "$tmp"/check/oauthfs.Rcheck/tests/testthat.Rout* 2>/dev/null | head -1)
[ -n "$out" ] && sed -n '/test_check/,$p' "$out"
if [ $status != 0 ] || ! grep -q '^Status: ' "$log" 2>/dev/null || grep -Eq '^Status: .*(ERROR|WARNING)' "$log"; then
	echo "r/run-tests.sh: R CMD check failed" >&2
	exit 1
fi

if [ -n "$dev" ]; then
	kill -INT "$dev"
	wait "$dev" && rc=0 || rc=$?
	dev=""
	if [ $rc != 0 ] || ! grep -q "stopped and cleaned up" "$tmp/dev.out"; then
		echo "r/run-tests.sh: oauthfs dev did not stop cleanly (exit $rc):" >&2
		cat "$tmp/dev.out" "$tmp/dev.err" >&2
		exit 1
	fi
fi
echo "r/run-tests.sh: ok"
