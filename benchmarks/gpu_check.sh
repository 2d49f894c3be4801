#!/usr/bin/env bash
# The prepared GPU check, one command on a bare GPU image (9.5 minutes at most):
#
#   bash benchmarks/gpu_check.sh [--cpu] [--authors-repo DIR] [--wheels DIR]
#
# Prepare here, once; carry .gpu_check/wheels along (git ignores it; 60 MiB at most):
#   python benchmarks/gpu_check.py --build-wheels .gpu_check/wheels
#
# The project's own code runs from this tree (PYTHONPATH, no pip install); the carried
# wheels the image lacks are unpacked into .gpu_check/site. The sections and what they
# print: benchmarks/gpu_check.py. --cpu: the same code on the CPU, small sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${GPU_CHECK_WHEELS:-.gpu_check/wheels}"
ARGS=()
while (($#)); do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
PY="${PYTHON:-python3}"
SITE="$PWD/.gpu_check/site"
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -d "$WHEELS" ]]; then
  "$PY" benchmarks/gpu_check.py --install-wheels "$WHEELS" --target "$SITE"
else
  echo "wheels: no carried folder $WHEELS (using what is installed)"
fi
LIMIT=570  # 9.5 minutes on the GPU; the CPU dry run's limit: gpu_check.CPU_BUDGET_S
[[ " ${ARGS[*]:-} " == *" --cpu "* ]] && LIMIT=410
exec timeout "$LIMIT" "$PY" benchmarks/gpu_check.py "${ARGS[@]}"
