#!/usr/bin/env bash
# Creates .venv with the locked dependencies. Installs Debian's python3-venv first when it is
# missing and we run as root; otherwise says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
UV_VERSION=0.13.9

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "bootstrap: Python 3.11 or newer is needed as '$PY' (set PYTHON=...)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "bootstrap: installing Debian's python3-venv"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv .venv
    else
      echo "bootstrap: '$PY -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
      exit 2
    fi
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "uv==${UV_VERSION}"
# Exactly the locked versions, verified against their hashes, then our own packages.
.venv/bin/uv pip sync -q --python .venv/bin/python requirements.lock
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
