#!/usr/bin/env bash
# The GPU check: at most 8 minutes on one GPU, writes results/gpu_check.txt (see benchmarks/gpu_check.py).
# On a machine without a GPU: bash benchmarks/gpu_check.sh --dry-run (every step on the CPU, toy sizes, output to a
# temporary file; never a GPU figure).
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" RAY_USAGE_STATS_ENABLED=0
exec timeout 480 python benchmarks/gpu_check.py "$@"
