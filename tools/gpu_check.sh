#!/usr/bin/env bash
# Issue #17's GPU measurements in one command, for one device call (about 5 minutes on an
# H200, at most ~8: each step has a time limit and the whole a budget).
#
# Here, once:    bash tools/gpu_prepare.sh                 (wheels + data -> dist/gpu_carry)
# On the GPU:    run(command="bash tools/gpu_check.sh", carry=["dist/gpu_carry"], timeout_s=600)
# Dry run here:  DRY=1 OUT=/tmp/gpu_check PY=.venv/bin/python bash tools/gpu_check.sh
#                (CPU, tiny sizes, the same steps and the same install)
#
# Steps: install attnbench (+ the carried wheels) into a --target folder; `bench attention`
# in bf16 at B 2, h 8, d 512, w 64 for dot, truncated, graph (degree 8), proj_ref, sdpa_ref
# at N 16384 and 32768 with tools/gpu_targets.yaml's PASS/FAIL, and additive + dot at 16384
# with tools/gpu_additive.yaml's; `bench throughput --device cuda`; the SST-2 and UD POS
# presets with trainer=gpu when their data was carried. Everything it keeps goes to $OUT
# (at most 8 files come back from a device call): log.txt, attention.{csv,png},
# attention_targets.json, additive.csv, additive_targets.json, {sst2,pos}_summary.json.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu_check_out}"
PY="${PY:-python3}"  # the device's python3 holds torch
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # we cd later
CARRY="${CARRY:-$ROOT/dist/gpu_carry}"
WORK="${WORK:-/tmp/attnbench_gpu_check}"
BUDGET="${BUDGET:-480}"  # seconds for all steps; a step gets at most what is left
DRY="${DRY:-0}"
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"
LOG="$OUT/log.txt"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1

if [ "$DRY" = 1 ]; then  # CPU, tiny sizes: proves the script runs end to end
  DEVICE=cpu SIZES=128,256 ADDITIVE_N=128 SHAPE=(--batch 1 --heads 2 --d-model 32 --window 8)
  TIMING=(--repeats 1 --warmup 0 --min-time 0)
  TRAINER=(trainer=cpu trainer.max_epochs=1 trainer.limit_train_batches=3
    trainer.limit_val_batches=1 trainer.limit_test_batches=1)
  THROUGHPUT=(--device cpu --epochs 2 trainer.limit_train_batches=3 trainer.limit_val_batches=1
    trainer.limit_test_batches=1)
else
  DEVICE=cuda SIZES=16384,32768 ADDITIVE_N=16384 SHAPE=(--batch 2 --heads 8 --d-model 512 --window 64)
  TIMING=(--repeats 3 --warmup 2 --min-time 0.5)
  TRAINER=(trainer=gpu)
  THROUGHPUT=(--device cuda --epochs 4)
fi

step() {  # step NAME LIMIT_S CMD...: run CMD with the smaller of LIMIT_S and what is left
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "=== $name: SKIPPED (budget of ${BUDGET}s spent)"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  echo "=== $name (limit ${limit}s, ${SECONDS}s elapsed)"
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0))s"
  return $rc
}

# -- install. Not a venv: the device's python3 is itself a venv (/opt/torch/.venv) whose
# torch a new venv's --system-site-packages would not see; a --target folder on PYTHONPATH
# (as /work/.library/device/README.md installs carried wheels) keeps torch and adds ours.
SITE="$WORK/site"
export PY SITE CARRY ROOT  # for the install's own shell (timeout runs commands, not functions)
step install 120 bash -c 'pip=("$PY" -m pip install -q --no-index --no-deps --no-compile
  --no-cache-dir --target "$SITE"); "${pip[@]}" "$CARRY"/wheels/*.whl || exit 1
  "${pip[@]}" --no-build-isolation "$ROOT" && exit 0
  echo "building the checkout failed; installing the wheel tools/gpu_prepare.sh built"
  "${pip[@]}" --upgrade "$CARRY"/project/*.whl' || { echo "install failed"; exit 1; }
export PYTHONPATH="$SITE"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
cd "$WORK" || exit 1  # not the checkout: `python -m` would import its source tree first
AB=("$PY" -m attnbench)
"$PY" -c "import attnbench, torch; print('attnbench from', attnbench.__file__); \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv

# -- attention kernels
step "bench attention (bf16)" 240 "${AB[@]}" bench attention --device "$DEVICE" --dtype bf16 \
  --variants dot,truncated,graph,proj_ref,sdpa_ref --sizes "$SIZES" "${SHAPE[@]}" --degree 8 \
  "${TIMING[@]}" --config "$ROOT/tools/gpu_targets.yaml" --out "$WORK/attn"
step "bench attention additive (bf16)" 120 "${AB[@]}" bench attention --device "$DEVICE" \
  --dtype bf16 --variants additive,dot --sizes "$ADDITIVE_N" "${SHAPE[@]}" --repeats 1 \
  --warmup 1 --min-time 0 --time-limit 60 --config "$ROOT/tools/gpu_additive.yaml" \
  --out "$WORK/additive"

# -- the training loop
step "bench throughput" 120 "${AB[@]}" bench throughput "${THROUGHPUT[@]}"

# -- the presets (today on the H200: SST-2 4,173 samples/s in 37.6 s; POS 2,024 samples/s in
# 87.5 s, test acc 0.949; target >= 3x the samples/s at the same accuracy +- 0.5 point)
preset() {  # preset NAME EXPERIMENT BASELINE_SAMPLES_PER_S DATA_FOLDER LIMIT_S
  local name="$1" experiment="$2" baseline="$3" folder="$4" limit="$5"
  if [ ! -d "$CARRY/data/$folder" ]; then
    echo "=== $name: SKIPPED (no $CARRY/data/$folder; run tools/gpu_prepare.sh and carry it)"
    return
  fi
  ATTNBENCH_DATA="$CARRY/data" step "preset $name" "$limit" "${AB[@]}" "experiment=$experiment" \
    "${TRAINER[@]}" "hydra.run.dir=$WORK/$name"
  if [ -f "$WORK/$name/summary.json" ]; then
    cp "$WORK/$name/summary.json" "$OUT/${name}_summary.json"
    "$PY" - "$WORK/$name/summary.json" "$baseline" "$name" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
rate, base = s.get("train_samples_per_s") or float("nan"), float(sys.argv[2])
acc = {k: round(v, 4) for k, v in (s.get("metrics") or {}).items() if k.endswith("/acc")}
print(f"PRESET {sys.argv[3]}: {rate:.0f} samples/s = {rate / base:.2f}x the issue's "
      f"{base:.0f} (target >= 3x: {'PASS' if rate >= 3 * base else 'FAIL'}); "
      f"wall {s.get('wall_seconds', float('nan')):.1f} s; status {s.get('status')}; {acc}")
EOF
  fi
}
preset sst2 sst2_transformer 4173 sentiment 120
preset pos pos_ud_transformer 2024 pos 180

# -- what comes back, and the verdicts in one place
for pair in attn/attention.csv:attention.csv attn/attention.png:attention.png \
  attn/targets.json:attention_targets.json additive/attention.csv:additive.csv \
  additive/targets.json:additive_targets.json; do
  [ -f "$WORK/${pair%%:*}" ] && cp "$WORK/${pair%%:*}" "$OUT/${pair##*:}"
done
echo "=== targets"
"$PY" - "$OUT/attention_targets.json" "$OUT/additive_targets.json" <<'EOF'
import json, sys
from pathlib import Path
for path in map(Path, sys.argv[1:]):
    if not path.is_file():
        print(f"MISSING {path.name}: that benchmark did not finish")
        continue
    for key, t in json.loads(path.read_text()).items():
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        print(f"{t['verdict']:<4}  {key}: {value} (target {t['target']})")
EOF
echo "=== done in ${SECONDS}s"
