#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA GPU and the project's dependencies (no hub needed):
#   1. the CUDA tests (engine on CUDA fp32 and bf16, with and without CUDA graphs, against the CPU pipeline);
#   2. correctness on a bert-base-shaped model (benchmarks/cuda_correctness.py);
#   3. `mlm-bot bench` twice, eager and with CUDA graphs, each with its own baseline, in one run;
#   4. the CPU side (benchmarks/cpu_side.py): the batcher before the event-loop work against this one, on the GPU.
# Results go to $OUT (default ./gpu-results): logs, and JSON with the device info.
# Usage: bash benchmarks/gpu_check.sh            (takes about 5 minutes on an H100/H200)
#        STEPS="tests bench" bash benchmarks/gpu_check.sh   (a subset of: tests correctness bench cpu-side)
#        RAY=1 bash benchmarks/gpu_check.sh         (the bench also measures Ray Serve; needs mlm-bot[ray])
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
PY=${PYTHON:-python3}
status=0
STEPS=${STEPS:-tests correctness bench cpu-side}
step() { echo; echo "=== $1 ($(date +%T))"; }
wants() { [[ " $STEPS " == *" $1 "* ]]; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/device.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'cpus', __import__('os').cpu_count())" 2>&1 | tee -a "$OUT/device.txt"

if wants tests; then
step "CUDA tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/engine/test_cuda_graphs.py tests/engine/test_engine.py 2>&1 \
  | tail -25 | tee "$OUT/tests.log" || status=1
fi

if wants correctness; then
step "correctness, bert-base shape"
timeout 180 $PY benchmarks/cuda_correctness.py --sentences 512 --json-out "$OUT/correctness.json" 2>&1 \
  | grep -v -E "Warning|Loading weights|Writing model" | tee "$OUT/correctness.log" || status=1
fi

if wants bench; then
bench=(--sentences 8192 --serial-sentences 512 --baseline-sentences 1024 --concurrency 1,64,256,1024
       --max-batch-size 256 --max-batch-tokens 65536)
step "bench, eager"
timeout 300 $PY -m bot.cli --log-level WARNING bench "${bench[@]}" --cuda-graphs off --json-out "$OUT/bench-eager.json" 2>&1 \
  | grep -v -E "Warning|Loading weights|Writing model" | tee "$OUT/bench-eager.log" || status=1
# RAY=1 adds the Ray Serve row (one replica, one GPU) to the CUDA-graphs run: needs `pip install "mlm-bot[ray]"`.
[[ "${RAY:-0}" == 1 ]] && bench+=(--ray-serve --ray-cpus-per-replica 4)
step "bench, CUDA graphs"
timeout 300 $PY -m bot.cli --log-level WARNING bench "${bench[@]}" --cuda-graphs on --json-out "$OUT/bench-graphs.json" \
  2>&1 | grep -v -E "Warning|Loading weights|Writing model" | tee "$OUT/bench-graphs.log" || status=1
fi
if wants cpu-side; then
step "CPU side: the batcher before the event-loop work against this one, bert-base on the GPU"
# Without git history here, CPU_SIDE_BASELINE names the old batcher saved as a file (see benchmarks/cpu_side.py).
timeout 240 $PY benchmarks/cpu_side.py --forward model --shape bert-base --device cuda --callers 64,256,1024 \
  --sentences 8192 --rounds 2 ${CPU_SIDE_BASELINE:+--baseline-file "$CPU_SIDE_BASELINE"} \
  --json-out "$OUT/cpu-side.json" 2>&1 \
  | grep -v -E "Warning|Loading weights|Writing model" | tee "$OUT/cpu-side.log" || status=1
fi
step "done, status $status"
exit $status
