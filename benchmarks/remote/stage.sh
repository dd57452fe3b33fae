#!/usr/bin/env bash
# First call of a remote ACDC sweep (see README.md beside this file): install the harness and the
# packages the GPU image lacks into .device/site, unpack the ACDC training slices into .device/data,
# and prove the harness trains on the GPU before the expensive second call.  Run from the repository
# root on the remote machine, with .whl/ and .acdc/slices.tar.xz carried.
set -euo pipefail
device_root="$PWD/.device"
mkdir -p "$device_root"

# datasets 5.x wants pyarrow >= 24; 4.8 runs on pyarrow >= 21.  Pick the one the image's pyarrow fits.
pyarrow_major=$(python3 -c "import pyarrow; print(pyarrow.__version__.split('.')[0])")
if [ "$pyarrow_major" -ge 24 ]; then datasets_wheel=$(ls .whl/datasets-5.*.whl); else datasets_wheel=$(ls .whl/datasets-4.*.whl); fi
wheels=$(ls .whl/*.whl | grep -v '/datasets-')
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$device_root/site" \
    $wheels "$datasets_wheel"
export PYTHONPATH="$device_root/site"
echo "installed into $device_root/site (pyarrow $pyarrow_major.x, $(basename "$datasets_wheel"))"

python3 benchmarks/remote/pack_acdc.py unpack .acdc/slices.tar.xz "$device_root/data/acdc"

python3 - <<'EOF'
import datasets, medpy.metric, segment_anything, torch
from bench.registry import METHODS
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()} ({torch.cuda.get_device_name() if torch.cuda.is_available() else '-'}), "
      f"datasets {datasets.__version__}; {len(METHODS.names())} methods registered")
EOF
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || echo 'no nvidia-smi'

# The GPU path end to end (training, validation, test scoring, records) on the embedded phantoms.
python3 -m bench.cli run --methods supervised,mean-teacher --dataset synthetic --labels 2 --budget smoke \
    --out "$device_root/smoke" --no-progress --no-estimate
# The SAM methods' bf16 path (CUDA autocast casts more operations than the CPU's), with the tiny SAM.
python3 -m bench.cli run --methods samed,cpc-sam,interactmatch,knowsam,synfoc,synfoc-unet --dataset synthetic \
    --labels 2 --budget smoke --precision bf16 --sam-model tiny --sam-random-init \
    --out "$device_root/smoke" --no-progress --no-estimate
python3 - <<EOF
import json, pathlib
for path in sorted(pathlib.Path("$device_root/smoke").rglob("summary.json")):
    summary = json.loads(path.read_text())
    print(summary["method"], summary["config"]["precision"], f"Dice {summary['metrics']['dice']:.3f}",
          summary["hardware"], f"{summary['peak_memory_mb']:.0f} MB", summary["git_commit"])
EOF
echo "stage: ready"
