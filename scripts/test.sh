#!/usr/bin/env bash
# Fresh machine → tests: set up ./.venv with the test extras, lint, run the whole suite.
# The suite starts what it needs itself (embedded broker, kubesim) on free ports.
# Fails on any failing test, on lint findings, and when no test ran (pytest exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# A real Prometheus server (and promtool) for the dashboard tests.
if ! command -v prometheus >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
