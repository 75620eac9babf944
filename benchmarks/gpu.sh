#!/usr/bin/env bash
# The suite's figures on a GPU, in bf16: the quick grid (effective prompt tokens per second of every run, where the
# time went, peak GPU memory) and the scorer against lm-evaluation-harness on the same requests.
#
#   bash benchmarks/gpu.sh              # on a machine with an NVIDIA GPU and a CUDA build of torch
#   bash benchmarks/gpu.sh --dry-run    # the same steps on the CPU at tiny sizes: proves the script end to end
#
# Results stay in the folder it prints (the MLflow store gpu.db and the grid copy). The lm-eval part needs the
# benchmark extra (pip install -e ".[benchmarks]"); without it that part is skipped with one line.
set -euo pipefail

cd "$(dirname "$0")/.."
dry_run=0
case "${1:-}" in
  --dry-run) dry_run=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu.sh [--dry-run]" >&2; exit 2 ;;
esac

if (( dry_run )); then
  grid_sizes=(--limit 4 --dataset emotion)
  lmeval_sizes=(--zero 4 --fixed 2 --repeats 1)
  echo "dry run: CPU, tiny sizes (${grid_sizes[*]}; lm-eval ${lmeval_sizes[*]})"
else
  grid_sizes=()
  lmeval_sizes=()
  if ! command -v nvidia-smi >/dev/null; then
    echo "gpu.sh: no nvidia-smi here: run it on a machine with an NVIDIA GPU, or with --dry-run" >&2
    exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else
    f"gpu.sh: torch {torch.__version__} sees no CUDA device: install a CUDA build of torch")'
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/genclsbench-gpu.XXXXXX")
echo "== quick grid in bf16 (results in $out)"
python benchmarks/gpu_grid.py --out "$out" --dtype bfloat16 "${grid_sizes[@]}"

echo "== scorer vs lm-evaluation-harness in bf16"
if python -c 'import lm_eval' 2>/dev/null; then
  python benchmarks/scoring_vs_lmeval.py --dtype bfloat16 "${lmeval_sizes[@]}"
else
  echo 'skipped: lm_eval is not installed (pip install -e ".[benchmarks]" installs lm-eval 0.4.13)'
fi
echo "== done; browse the runs: mlflow ui --backend-store-uri sqlite:///$out/gpu.db"
