#!/usr/bin/env bash
# Create ./.venv and install kubetide into it (with the test extras when given "test").
# Needs only python3, pip and apt: installs python3-venv with apt if venv is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    echo "python3 -m venv failed; installing python3-venv with apt" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
    rm -rf .venv && python3 -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$extras" = "test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
