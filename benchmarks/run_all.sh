#!/usr/bin/env bash
# All CPU benchmarks of issue 8 (a-d) in sequence, then the GPU one (f; skips on CPU). Target: <= 10 min on
# 2 idle CPU cores. Prints every result line; the JSON-lines records go to ${OUT:-benchmarks/results.jsonl}.
#   bash benchmarks/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore
OUT=${OUT:-benchmarks/results.jsonl}
start=$(date +%s)
python benchmarks/bench_frechet.py --json "$OUT"                  # a. FD, N = 1000 and 10000, 3 repeats
python benchmarks/bench_inception.py --n 80 --json "$OUT"         # b. end to end + c. shared pass, 3 repeats
python benchmarks/bench_harness.py --json "$OUT"                  # d. harness overhead, smoke × 48 samples
python benchmarks/bench_gpu.py --json "$OUT"                      # f. GPU (skips without CUDA)
echo "TOTAL benchmark wall time: $(( $(date +%s) - start )) s"
