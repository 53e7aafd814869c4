#!/usr/bin/env bash
# run-tests.sh: the tests of the Python package python/, with pytest,
# against live 'oauthfs dev' mounts that the tests start themselves.
#
# It builds oauthfs into a temporary directory (or uses $OAUTHFS_BIN),
# installs the package from a copy of python/ (so the checkout gets no
# build/ or *.egg-info) into a venv of Debian's python3 that sees the
# system's pytest and setuptools, offline (--no-build-isolation
# --no-index), and runs pytest there, with TMPDIR in the temporary
# directory, which must be empty afterwards. Without FUSE the live tests
# skip; under OAUTHFS_REQUIRE_FUSE=1 that is a failure instead.
#
# Needs the Debian packages python3-venv, python3-pip, python3-setuptools,
# python3-wheel and python3-pytest. PYTHON picks another interpreter.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-/usr/bin/python3}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bin=${OAUTHFS_BIN:-}
if [ -z "$bin" ]; then
	bin=$tmp/oauthfs
	(cd "$root" && ${GO:-go} build -o "$bin" ./cmd/oauthfs)
fi

mkdir "$tmp/src" "$tmp/tmp"
cp -R "$root/python/pyproject.toml" "$root/python/README.md" "$root/python/src" "$root/python/tests" "$tmp/src/"
"$python" -m venv --system-site-packages "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
	--no-build-isolation --no-index "$tmp/src"

# From the copy, whose src/ layout keeps the tests on the installed package.
(
	cd "$tmp/src"
	TMPDIR=$tmp/tmp OAUTHFS_BIN=$bin PYTHONDONTWRITEBYTECODE=1 \
		"$tmp/venv/bin/python" -m pytest -p no:cacheprovider --basetemp="$tmp/basetemp" -ra tests
)

left=$(find "$tmp/tmp" -mindepth 1 -maxdepth 1)
if [ -n "$left" ]; then
	echo "python/run-tests.sh: the tests left these behind:" >&2
	echo "$left" >&2
	exit 1
fi
echo "python/run-tests.sh: ok"
