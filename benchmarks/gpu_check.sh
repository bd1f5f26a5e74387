#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU, under 10 minutes on one H200, run as is:
#   benchmarks/gpu_check.sh            (output in $OUT, or gpu_check_out/ here)
# 1. the test suite with CUDA present (tests/test_cuda.py runs; the rest as on CPU),
# 2. the fused (Triton) path in fp32/bf16/fp16 against eager (within the suite),
# 3. P1-P4 of `netadv bench` on the GPU,
# 4. one epoch of the CIFAR-sized ViT (configs/cifar10_vit.yaml's model) with each method, on
#    synthetic 32x32 images (no dataset travels), seconds per epoch from summary.json.
# Uses the machine's python3 and torch with this checkout on PYTHONPATH (nothing is installed).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check_out}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/netadv-inductor}
step() { echo; echo "== $* ($(date +%T))"; }

step environment
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $py -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/env.txt"

step "tests (CUDA tests and the suite; 4 minutes at most)"
timeout 240 $py -m pytest -q -x -p no:cacheprovider tests/test_cuda.py tests/activations \
  tests/layers tests/functional tests/test_fused.py 2>&1 | tail -n 15 | tee "$out/tests.txt"

step "benchmarks P1-P4 on the GPU (3 minutes at most)"
timeout 180 $py -m netadv bench --suite P1,P2,P3,P4 --device cuda --repeats 5 \
  --json "$out/bench.json" 2>&1 | tail -n 60 | tee "$out/bench.txt"

step "one epoch of the CIFAR-sized ViT per method (2 minutes at most)"
runs=/tmp/netadv-gpu-runs
rm -rf "$runs"
timeout 120 $py -m netadv sweep --config configs/cifar10_vit.yaml --methods baseline,hdfgd,sa \
  --seeds 0 --quiet --set dataset=synthetic --set image_size=32 --set epochs=1 \
  --set warmup_epochs=0 --set device=cuda --set "output_dir=$runs" 2>&1 | tail -n 5
$py - "$runs" <<'PY' 2>&1 | tee "$out/vit_epoch.txt"
import json, pathlib, sys
for s in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    d = json.loads(s.read_text())
    print(f"{d['arm']:>8}: {d['seconds_per_epoch']:.2f} s/epoch, {d['params']:,} params, "
          f"{d['flops'] / 1e6:.1f} MFLOPs/example, status {d['status']}, {d['hardware']}")
PY
echo; echo "gpu_check done: $out"
