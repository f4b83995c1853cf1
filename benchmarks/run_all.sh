#!/usr/bin/env bash
# All CPU benchmarks of issue 8 (a-d) in sequence (b/c at N=40 to fit the budget; N=2000: see RESULTS.md), then the GPU one (f; skips on CPU). Target: <= 10 min on
# 2 idle CPU cores. Prints every result line; the JSON-lines records go to ${OUT:-benchmarks/results.jsonl}.
#   bash benchmarks/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore
OUT=${OUT:-benchmarks/results.jsonl}
start=$(date +%s)
status=0  # a missed target (exit 1) does not stop the other benchmarks; the script exits 1 at the end
python benchmarks/bench_frechet.py --json "$OUT" || status=1               # a. FD, N = 1000 and 10000, 3 repeats
python benchmarks/bench_inception.py --n 40 --json "$OUT" || status=1      # b. end to end + c. shared pass, 3 repeats
python benchmarks/bench_harness.py --json "$OUT" || status=1               # d. harness overhead, smoke × 48 samples
python benchmarks/bench_gpu.py --json "$OUT" || status=1                   # f. GPU (skips without CUDA)
echo "TOTAL benchmark wall time: $(( $(date +%s) - start )) s; $([ $status = 0 ] && echo 'all targets met' || echo 'SOME TARGET MISSED (see FAIL above)')"
exit $status
