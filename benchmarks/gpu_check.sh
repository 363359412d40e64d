#!/usr/bin/env bash
# GPU check (issue #14, item 4): unattended, on any machine with an NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: benchmarks/results/gpu-check-<UTC time>)
#
# 1. environment: uses .venv (creates it with `pip install -e ".[test]"` when missing); adds the
#    GPU extras when the package index is reachable (cupy-cuda12x, dask-cuda; a CUDA build of the
#    pinned torch with TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu126 or similar) and
#    says plainly which GPU paths stay on the CPU when they cannot be installed (no silent skip);
# 2. the GPU tests (`pytest -m gpu`: torch CUDA and cupy vs their CPU fallbacks);
# 3. spot CNN throughput (spots/s) on the GPU and on one CPU thread, same cutouts;
# 4. a full-size 20 × 20 simulated scan (400 frames of 2018 × 2016) through the demo chain on
#    cluster-configs/local-cuda.yaml (one dask-cuda worker per GPU): images/s end to end and
#    ms/image per stage (benchmarks/bench_pipeline.py --cluster), with `nvidia-smi` sampling GPU
#    utilisation and memory once a second meanwhile.
# Everything lands in OUT_DIR (summary.txt + raw files); copy the figures into
# benchmarks/results.md ("GPU check"). Exit status: non-zero if a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu-check-$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
PY=.venv/bin/python
status=0
say() { echo "$*" | tee -a "$SUMMARY"; }
step() { say ""; say "== $*"; }

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: this machine has no NVIDIA GPU (nothing to check)" >&2; exit 2; }
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"
say "$(nproc) CPU cores; $(date -u)"

step "environment"
if [ ! -x "$PY" ]; then
    python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" || { say "FAILED: pip install -e .[test]"; exit 1; }
fi
if [ -n "${TORCH_CUDA_INDEX:-}" ] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    .venv/bin/pip install -q "torch==$($PY -c 'import torch; print(torch.__version__.split("+")[0])')" \
        --index-url "$TORCH_CUDA_INDEX" || say "could not install a CUDA torch from $TORCH_CUDA_INDEX"
fi
$PY -c "import cupy" 2>/dev/null || .venv/bin/pip install -q "cupy-cuda12x>=13" 2>/dev/null || true
$PY -c "import dask_cuda" 2>/dev/null || .venv/bin/pip install -q "dask-cuda[cu12]" 2>/dev/null || true
$PY - <<'EOF' | tee -a "$SUMMARY"
import torch
print(f"torch {torch.__version__}: CUDA {'available, ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NOT available (CPU build): spot CNN, indexer and autoencoder stay on the CPU'}")
try:
    import cupy
    print(f"cupy {cupy.__version__}: {cupy.cuda.runtime.getDeviceCount()} device(s)")
except Exception as err:  # noqa: BLE001 - report whatever stops cupy
    print(f"cupy NOT usable ({type(err).__name__}: {err}): cupy kernels stay on numpy")
try:
    import dask_cuda
    print(f"dask-cuda {dask_cuda.__version__}")
except Exception as err:  # noqa: BLE001
    print(f"dask-cuda NOT usable ({err}): local-cuda.yaml cannot start")
EOF

step "GPU tests (pytest -m gpu)"
$PY -m pytest -q -p no:cacheprovider -m gpu -rs tests 2>&1 | tee "$OUT/gpu-tests.txt" | tail -15 | tee -a "$SUMMARY"
[ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; say "FAILED: GPU tests"; }

step "spot CNN throughput"
$PY - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import time, numpy as np, torch
from laueflow.io.model_files import load_spotcnn
from laueflow.kernels.cutouts import normalise_cutouts
from laueflow.models.spotcnn import predict_descriptors
rng = np.random.default_rng(0)
yy, xx = np.mgrid[:32, :32]
cut = np.exp(-((xx - 15.5 - rng.normal(0, 1, (20000, 1, 1))) ** 2 + (yy - 15.5) ** 2) / 8.0) + rng.normal(0, .02, (20000, 32, 32))
cut = np.asarray(normalise_cutouts(cut.astype(np.float32)), dtype=np.float32)
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
out = {}
for dev in devices:
    torch.set_num_threads(1)
    model = load_spotcnn(device=dev)
    n = 2000 if dev == "cpu" else len(cut)
    predict_descriptors(model, cut[:256], batch_size=4096)  # warm-up
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out[dev] = predict_descriptors(model, cut[:n], batch_size=4096)
    if dev == "cuda":
        torch.cuda.synchronize()
    print(f"spot CNN on {dev}: {n / (time.perf_counter() - t):,.0f} spots/s")
if "cuda" in out:
    print(f"max |cuda - cpu| on the first 2000 spots: {np.abs(out['cuda'][:2000] - out['cpu']).max():.2e}")
EOF

step "20 x 20 full-size scan on cluster-configs/local-cuda.yaml"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$OUT/gpu-utilisation.csv" 2>/dev/null &
SMI=$!
$PY benchmarks/bench_pipeline.py --shape 20x20 --cluster cluster-configs/local-cuda.yaml --repeat 2 \
    --workdir "$OUT/scan" --json "$OUT/pipeline.json" 2>&1 | tee "$OUT/pipeline.txt" | tail -12 | tee -a "$SUMMARY"
[ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; say "FAILED: pipeline run on local-cuda.yaml"; }
kill "$SMI" 2>/dev/null
$PY - "$OUT/gpu-utilisation.csv" <<'EOF' | tee -a "$SUMMARY"
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r and r[0][:1].isdigit()]
util = [float(r[1].split()[0]) for r in rows]
mem = [float(r[2].split()[0]) for r in rows]
if util:
    print(f"GPU utilisation during the run: mean {sum(util) / len(util):.0f} %, max {max(util):.0f} %; "
          f"memory max {max(mem):.0f} MiB ({len(util)} samples)")
EOF
rm -rf "$OUT/scan"
say ""
say "gpu_check: done (status $status); files in $OUT"
exit $status
