#!/usr/bin/env bash
# Second call of a remote ACDC sweep (see README.md beside this file): the rows of
# leaderboards/acdc-quick that a 2-core CPU cannot train, on one GPU, until a deadline.
#
#   bash benchmarks/remote/acdc_quick_gpu.sh SECONDS
#
# SECONDS: when to stop training (counted from the start of this script) and pack what finished into
# one $OUT/runs-METHOD.tar.gz per method (complete runs have summary.json; unfinished ones are left out
# when copied back).  One archive per method because a file over 16 MiB does not come back from the
# machine: a rehearsal's 27 runs of barely trained models packed to 14 MB (their predictions.npz, up to
# 1.2 MB each, compress poorly), so the 54 runs of the six methods could not share one archive.
# Needs stage.sh's .device/ from an earlier call on the same machine, and .whl-sam/ and
# .acdc/volumes.tar.xz carried.
#
# What runs, all at once on the one GPU: each SAM fine-tuning method in its own process, 3 labeled
# patients then 1 and 7, seeds 0-2 in order, with bf16 autocast (--precision bf16; their rows are flagged
# bf16-autocast): one seed of the six methods is ~21 PFLOP of training (1,000 steps;
# `benchmarks/method_step_time.py --flops` counted 154-799 GFLOP per step at 1+1 images, x 8 for 8+8),
# more than a few minutes of fp32 hold.  Nothing else: every other row of the sweep has all three seeds
# at 1, 3 and 7 labeled patients, trained on CPUs (STATUS.md), and a GPU call that trained them again
# would take the GPU from the rows only it can train.
# $REHEARSAL_ARGS, if set, is appended to every `bench run` (e.g. "--iters 2 --sam-model tiny
# --sam-random-init" to rehearse the whole flow on a CPU before spending GPU time).
set -uo pipefail
deadline=${1:?usage: acdc_quick_gpu.sh SECONDS (when to stop training and pack the results)}
started=$SECONDS
device_root="$PWD/.device"
out="${OUT:-$device_root/out}"
if [ ! -d "$device_root/data/acdc/data/slices" ] || [ ! -d "$device_root/site" ]; then
  echo "no $device_root/site or training slices: run benchmarks/remote/stage.sh first on this machine" >&2
  exit 2
fi
export PYTHONPATH="$device_root/site" PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export BENCH_DATA_ROOT="$device_root/data" BENCH_CACHE_DIR="$device_root/cache"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$device_root/site" .whl-sam/*.whl
python3 benchmarks/remote/pack_acdc.py unpack .acdc/volumes.tar.xz "$device_root/data/acdc" || exit 3

runs="$device_root/runs"
logs="$device_root/logs"
mkdir -p "$runs" "$logs" "$out"
common=(--config leaderboards/acdc-quick/sweep.yaml --out "$runs" --no-progress --no-estimate ${REHEARSAL_ARGS:-})
groups=()

methods=(samed cpc-sam interactmatch knowsam synfoc synfoc-unet)
for method in "${methods[@]}"; do
  OMP_NUM_THREADS=2 setsid bash -c "
    python3 -m bench.cli run ${common[*]} --methods $method --labels 3 --seeds 3 --precision bf16
    python3 -m bench.cli run ${common[*]} --methods $method --labels 1,7 --seeds 3 --precision bf16
  " > "$logs/$method.log" 2>&1 &
  groups+=($!)
done

running() { for pid in "${groups[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
while running && [ $((SECONDS - started)) -lt "$deadline" ]; do
  sleep 20
  done_count=$(find "$runs" -name summary.json | wc -l)
  failed_count=$(find "$runs" -name failure.json | wc -l)
  memory=$(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null | tr '\n' ' ')
  echo "t=$((SECONDS - started))s complete=$done_count failed=$failed_count gpu: $memory"
done
for pid in "${groups[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
sleep 3
for pid in "${groups[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done

for method in "${methods[@]}"; do
  folders=$(cd "$runs" && ls -d */*/"$method" 2>/dev/null)
  [ -n "$folders" ] && tar -czf "$out/runs-$method.tar.gz" -C "$runs" --exclude best.pt --exclude checkpoint.pt \
      --exclude .lock $folders
done
tar -czf "$out/logs.tar.gz" -C "$device_root" logs
python3 - "$runs" <<'EOF'
import json, pathlib, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("summary.json")):
    s = json.loads(path.read_text())
    rows.append(f"{s['method']:<14} {s['labels']:>4} seed{s['seed']} {s['config'].get('precision', 'no'):>4} "
                f"Dice {100 * s['metrics']['dice']:5.1f}  {s['wall_seconds'] / 60:5.1f} min  {s['peak_memory_mb'] / 1024:5.1f} GiB")
print("\n".join(rows) or "no run finished")
for path in sorted(pathlib.Path(sys.argv[1]).rglob("failure.json")):
    failure = json.loads(path.read_text())
    print("FAILED", path.parent.relative_to(sys.argv[1]), failure.get("reason", "")[:200])
EOF
find "$out" -type f -size +16M -printf 'TOO LARGE TO COME BACK: %p (%s bytes)\n'
echo "packed after $((SECONDS - started)) s"
