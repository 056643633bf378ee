#!/usr/bin/env bash
# Fresh machine → demo: set up ./.venv, then run `kubetide demo` on the embedded default
# (Tansu broker + kubesim + collector + stream worker + actuator). Extra args go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/kubetide demo "$@"
