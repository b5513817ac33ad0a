#!/usr/bin/env bash
# GPU check, one call, under 5 minutes, installs nothing:
#   1. the test suite's CuPy cases (every test body parametrised by the `xp` fixture, on CuPy);
#      (the notebook tests hold none and need nbclient, so they are not collected);
#   2. the benchmark (python -m minivgg.bench) at 512 and 1024 on --device gpu, Winograd and im2col
#      convolutions, with PyTorch CUDA timed beside them for the ratio (skipped, with a message,
#      where torch is absent).
# Usage, from anywhere:  .ci/gpu_check.sh [output folder]   (default: $OUT/gpu_check, else /tmp/gpu_check)
# Python: $PYTHON, else .venv/bin/python when present, else python3; the repository root goes on
# PYTHONPATH, so no install is needed. Weights: the real VGG-19 when $MINIVGG_WEIGHTS or the cache
# (${MINIVGG_HOME:-~/.cache/minivgg}/vgg19.h5) has them; otherwise seeded random weights of the same
# shapes (a machine without network cannot fetch them; speed and memory do not depend on the values).
# Exit status: 0 all passed; 1 a step failed; 3 no usable GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
OUT_DIR=${1:-${OUT:-/tmp}/gpu_check}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
status=0
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

step "device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "
from minivgg.backend import gpu_status
import numpy, sys
ok, why = gpu_status()
print('CuPy GPU:', why)
if ok:
    import cupy
    print('cupy', cupy.__version__, '| numpy', numpy.__version__, '| python', sys.version.split()[0])
sys.exit(0 if ok else 3)
" || { echo "no usable GPU: nothing to check"; exit 3; }

step "1. CuPy test cases (pytest -k cupy)"
timeout 150 "$PY" -m pytest -q -k cupy -p no:cacheprovider --ignore=tests/test_notebooks.py tests 2>&1 | tee "$OUT_DIR/pytest_cupy.txt" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "CuPy tests FAILED"; status=1; }

step "2. benchmark at 512 and 1024 on the GPU, PyTorch CUDA beside it"
weights=real
if [ -z "${MINIVGG_WEIGHTS:-}" ] && [ ! -f "${MINIVGG_HOME:-$HOME/.cache/minivgg}/vgg19.h5" ]; then
    weights=random
    echo "real weights not on this machine: timing with seeded random weights of the same shapes"
fi
torch_flag=--torch
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || { torch_flag=""; echo "PyTorch CUDA not available here: timing minivgg only"; }
timeout 240 "$PY" -m minivgg.bench --sizes 512 1024 --device gpu --repeats 5 --weights "$weights" \
    --conv winograd im2col reference \
    $torch_flag --json | tee "$OUT_DIR/bench_gpu.jsonl"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "benchmark FAILED"; status=1; }

step "summary"
"$PY" - "$OUT_DIR/bench_gpu.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
for r in rows:
    if "error" in r:
        print(f"{r.get('impl')} {r['size']}: FAILED {r['error']}")
        continue
    peak = r.get("peak_gpu_bytes", 0) / 2**20
    label = f"{r['impl']}:{r['conv']}" if r.get("conv") else r["impl"]
    line = (f"{label:16} {r['size']:5} {r['seconds_per_eval']:.4f} s/eval {r['gflops']:8.0f} GFLOP/s "
            f"peak {peak:7.0f} MiB")
    if r["impl"] == "minivgg":
        line += (f" | {100 * r['fraction_of_matmul']:.0f}% of matmul ({r['matmul_gflops']:.0f} GFLOP/s)"
                 f" | estimate {r['estimated_peak_bytes'] / 2**20:.0f} MiB ({100 * r['estimate_error']:+.0f}%)")
    if "ours_over_torch_seconds" in r:
        line += (f" | ours/torch time {r['ours_over_torch_seconds']:.2f},"
                 f" loss rel diff {r['loss_rel_diff_vs_ours']:.1e}")
    print(line)
EOF
echo "total $(( $(date +%s) - start )) s; results in $OUT_DIR; status $status"
exit $status
