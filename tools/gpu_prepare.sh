#!/usr/bin/env bash
# Build, on this (networked) machine, what tools/gpu_check.sh needs on a device machine that
# reaches no package registry: wheels of the pure-Python dependencies its image lacks, and
# the SST-2 and UD POS data. All of it goes to dist/gpu_carry (dist/ is git-ignored), which
# the device call carries:  run(command="bash tools/gpu_check.sh", carry=["dist/gpu_carry"]).
#
#   bash tools/gpu_prepare.sh            # SHARED_DATA=../shared/data by default
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="${CARRY:-$ROOT/dist/gpu_carry}"
PY="${PY:-$ROOT/.venv/bin/python}"
SHARED_DATA="${SHARED_DATA:-$ROOT/../shared/data}"
# Not in the device image's package list (/work/.library/device/KINDS.md) but imported at
# startup: Hydra and its config library (antlr4 is omegaconf's grammar runtime). Pure Python,
# so one wheel serves any Python 3 there; the versions are the ones this checkout runs.
MISSING=(hydra-core omegaconf antlr4-python3-runtime)

rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/project" "$CARRY/data"
for pkg in "${MISSING[@]}"; do
  version="$("$PY" -c "from importlib.metadata import version; print(version('$pkg'))")"
  # pip wheel: the registry's wheel, or one built from the sdist (antlr4 ships no wheel)
  "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$CARRY/wheels" "$pkg==$version"
done
# attnbench itself, as of now: gpu_check.sh installs the checkout it is sent with, and falls
# back to this wheel only if that build fails there (e.g. an older setuptools)
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$CARRY/project" "$ROOT"
for task in sentiment pos; do  # the presets gpu_check.sh times
  if [ -d "$SHARED_DATA/$task" ]; then
    cp -r "$SHARED_DATA/$task" "$CARRY/data/"
  else
    echo "gpu_prepare: no $SHARED_DATA/$task; gpu_check.sh will skip that preset" >&2
  fi
done
ls "$CARRY/wheels" "$CARRY/project"
du -sh "$CARRY"
