#!/usr/bin/env bash
# Fetches redis-py's source distribution (it ships the client's own tests) and a venv
# with pytest to run them, into target/redis-py (or $1). The venv also holds
# openapi-spec-validator, which crates/node/tests/openapi.rs runs on /v1/openapi.json. Idempotent: does nothing when
# both are there. Used by .ci/run before the tests; crates/speedlayer/tests/
# redis_py_suite.rs runs compat/redis-py/suite.py with them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${1:-$ROOT/target/redis-py}"
VERSION=5.0.8
if [ -x "$DIR/venv/bin/python" ] && [ -d "$DIR/redis-$VERSION/tests" ] \
    && "$DIR/venv/bin/python" -c "import pytest, redis, openapi_spec_validator" 2>/dev/null; then
    exit 0
fi
mkdir -p "$DIR"
cd "$DIR"
if ! python3 -m venv venv 2>/dev/null; then
    # Debian's python3 makes venvs only with python3-venv.
    rm -rf venv
    apt-get install -y -q python3-venv >/dev/null
    python3 -m venv venv
fi
./venv/bin/pip install -q --disable-pip-version-check pytest "pytest-asyncio<0.24" mock openapi-spec-validator
./venv/bin/pip download -q --disable-pip-version-check --no-binary :all: --no-deps "redis==$VERSION"
tar xzf "redis-$VERSION.tar.gz"
./venv/bin/pip install -q --disable-pip-version-check "./redis-$VERSION"
echo "redis-py $VERSION and its tests are in $DIR"
