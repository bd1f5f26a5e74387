#!/usr/bin/env bash
# Reproduce the tables of docs/PERFORMANCE.md (about 30 minutes on a 2-core CPU; the first run
# also compiles the fused kernels, cached in .cache/inductor for later runs).
#   benchmarks/record.sh [output-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench}
mkdir -p "$out"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.cache/inductor}
py=${PYTHON:-.venv/bin/python}
lscpu > "$out/lscpu.txt"
# One intra-op thread and CPU time: on a shared machine, steadier than wall time (see the doc).
common=(--threads 1 --clock cpu)
$py -m netadv bench --suite P1 "${common[@]}" --json "$out/p1.json" | tee "$out/p1.txt"
$py -m netadv bench --suite P2 --json "$out/p2.json" | tee "$out/p2.txt"
$py -m netadv bench --suite P3 "${common[@]}" --repeats 15 --json "$out/p3.json" | tee "$out/p3.txt"
$py -m netadv bench --suite P4 "${common[@]}" --repeats 14 --json "$out/p4.json" | tee "$out/p4.txt"
$py -m netadv bench --suite P6 --json "$out/p6.json" | tee "$out/p6.txt"
# the same P1/P3 with the machine's default threads and wall time, for comparison
$py -m netadv bench --suite P1,P3 --json "$out/p13_wall.json" | tee "$out/p13_wall.txt"
