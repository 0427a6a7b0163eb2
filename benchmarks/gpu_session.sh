#!/usr/bin/env bash
# The whole GPU-machine check for per-layer profiling, as one command (see docs/benchmarks.md).
#
# Run on the device machine from the repository root, with `.whl` carried when it exists:
#     bash benchmarks/gpu_session.sh
# Prepare `.whl` here first (pure-Python wheels of the peers the machine lacks, ~6 MB; their other
# needs, pillow, safetensors, tqdm and numpy, are on the machine):
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: -d .whl torchinfo==1.8.0 torchview==0.2.7 \
#         graphviz==0.21 torchlens==2.36.1
# Writes $OUT/gpu_profile.json (after every case), $OUT/gpu_traces.tar.gz and $OUT/gpu_profile.log.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
export OUT PYTHONUNBUFFERED=1
site=src
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/peers .whl/*.whl \
        && site=/tmp/peers:src
fi
export PYTHONPATH=$site
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
    python3 -c 'import torch; c = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name() if c else "(no GPU)")'
} 2>&1 | tee "$OUT/gpu_profile.log"
python3 benchmarks/gpu_profile.py --budget-s "${BUDGET_S:-420}" "$@" 2>&1 | tee -a "$OUT/gpu_profile.log"
