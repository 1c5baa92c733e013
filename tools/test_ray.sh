#!/usr/bin/env bash
# The Ray build's tests (python/tests/test_ray.py) on a local Ray cluster:
# Ray Data and pyarrow go into the test venv that tools/test.sh made, and
# the package built there is reused. Run after tools/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python-venv
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install "ray[data]>=2.9"
FATHOM_BIN="$PWD/target/release/fathom" RAY_DISABLE_USAGE_STATS=1 \
    "$venv/bin/python" -m pytest -q python/tests/test_ray.py
