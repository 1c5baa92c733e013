#!/usr/bin/env bash
# The test suite: the Rust tests, then the Python package's tests against
# the package built from ./python in a virtual environment of its own
# (target/python-venv, made on first use with numpy, pyarrow and pytest).
# Needs cargo and python3 (3.9 or later) with venv; pip fetches the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release
venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install "numpy>=1.21" "pyarrow>=14" "pytest>=7"
# Exactly what a user runs; maturin reuses this checkout's target/ build.
"${pip[@]}" install ./python
FATHOM_BIN="$PWD/target/release/fathom" "$venv/bin/python" -m pytest -q python/tests
