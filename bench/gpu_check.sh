#!/usr/bin/env bash
# Every GPU check of the trainer on one NVIDIA GPU, no network, under 4 minutes; prints a short table last.
# Needs only a CUDA build of PyTorch. Optional packages (DeepSpeed, webdataset, ...) are installed from wheel
# files placed in bench/wheels/ beside this script; without them their checks are skipped with a message.
# DALI is not needed: the trainer runs from synthetic on-device data here.
#
#   bench/gpu_check.sh            # on the GPU machine
#   bench/gpu_check.sh --dry-run  # on a CPU: the same checks at tiny sizes (tests the script)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )}"

# optional wheels: offline install only (the machine has no network)
if compgen -G "$HERE/wheels/*.whl" > /dev/null; then
  DS_BUILD_OPS=0 "$PYTHON" -m pip install --quiet --no-index --find-links "$HERE/wheels" "$HERE"/wheels/*.whl \
    || echo "gpu_check: could not install the wheels in bench/wheels/; their checks will be skipped"
else
  echo "gpu_check: no wheels in bench/wheels/: checks that need DeepSpeed are skipped unless it is installed"
fi

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
exec timeout 235 "$PYTHON" "$HERE/gpu_check.py" "$@"
