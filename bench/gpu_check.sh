#!/usr/bin/env bash
# The GPU paths in one prepared run (bench/gpu_check.py): bench/gpu_check.sh [--cpu] [--only a,b]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RECALIGN_ASSETS:-}" ] && [ -d ../shared/assets ]; then export RECALIGN_ASSETS="$(cd ../shared/assets && pwd)"; fi
exec "${PYTHON:-python}" bench/gpu_check.py "$@"
