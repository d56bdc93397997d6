#!/usr/bin/env bash
# Evaluate trained nets with the paper's test protocol (dense / multi-crop, several scales, flips) on the
# validation shards, one task per GPU; exact top-1/top-5 errors however many ranks run it.
#   DIST_VGG_EVAL_RUNS="runs/D-jitter runs/E-jitter" sbatch slurm/eval.sh      # two runs = an ensemble
#SBATCH --job-name=vgg-eval
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=04:00:00
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
#
# Settings (environment variables):
#   DIST_VGG_EVAL_RUNS  run folders / checkpoints / weights files to evaluate, space-separated (several: an
#                       ensemble) (default: $DIST_VGG_RUN_ROOT/E-jitter).
#   DIST_VGG_RUN_ROOT   default location of the runs (default: $SLURM_SUBMIT_DIR/runs).
#   DIST_VGG_DATA       shard folder with the val/ split (default: $SLURM_SUBMIT_DIR/data/shards).
#   DIST_VGG_EVAL_MODE  test protocol, e.g. dense, multi-crop, dense+multi-crop (default dense).
#   DIST_VGG_EVAL_SCALES  test scales Q, comma-separated (default 256,384,512: the paper's jittered-model Q set).
#   DIST_VGG_EVAL_OUT   JSON results file (default: eval-<job id>.json in the submit folder).
#   DIST_VGG_DEVICE     cuda | cpu (default: cuda when the job has GPUs).
#   DIST_VGG_PYTHON     Python with dist-vgg installed (default: `python` on PATH).
#   DIST_VGG_EVAL_ARGS  extra `dist-vgg eval` options, e.g. "--batch-size 32 --no-flip".
set -euo pipefail
fail() {
  echo "[dist-vgg slurm] ERROR: $*" >&2
  exit 2
}
[ -n "${SLURM_JOB_ID:-}" ] || fail "not inside a SLURM job: submit with sbatch slurm/eval.sh"
PY=${DIST_VGG_PYTHON:-python}
command -v "$PY" >/dev/null || fail "DIST_VGG_PYTHON=$PY is not an executable; point it at the Python that has dist-vgg installed"
SUBMIT=${SLURM_SUBMIT_DIR:-$PWD}
RUN_ROOT=${DIST_VGG_RUN_ROOT:-$SUBMIT/runs}
read -r -a RUNS <<<"${DIST_VGG_EVAL_RUNS:-$RUN_ROOT/E-jitter}"
for r in "${RUNS[@]}"; do
  [ -e "$r" ] || fail "$r does not exist: set DIST_VGG_EVAL_RUNS to trained run folders or checkpoints"
done
DATA=${DIST_VGG_DATA:-$SUBMIT/data/shards}
[ -f "$DATA/manifest.json" ] || fail "DIST_VGG_DATA=$DATA holds no manifest.json: point it at the shard folder"
if [ -z "${DIST_VGG_DEVICE:-}" ]; then
  if [ "${SLURM_GPUS_ON_NODE:-0}" -gt 0 ] 2>/dev/null; then DEVICE=cuda; else DEVICE=cpu; fi
else
  DEVICE=$DIST_VGG_DEVICE
fi
# Rendezvous as in launch_train.sh: the first node's NodeAddr (names may not resolve), a port from the job id.
first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$first_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-$first_node}
export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
# One OpenMP thread pool per rank sized to its CPUs, not to the whole node.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# NCCL: a failed collective raises instead of hanging; warnings reach the log.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1 NCCL_DEBUG=${NCCL_DEBUG:-WARN}
OUT=${DIST_VGG_EVAL_OUT:-$SUBMIT/eval-$SLURM_JOB_ID.json}
# shellcheck disable=SC2206  # word splitting of the user's extra arguments is intended
EXTRA=(${DIST_VGG_EVAL_ARGS:-})
echo "[dist-vgg slurm $(date -u +%FT%TZ)] job $SLURM_JOB_ID eval ${RUNS[*]} data=$DATA device=$DEVICE out=$OUT"
exec srun --kill-on-bad-exit=1 "$PY" -m dist_vgg.cli eval "${RUNS[@]}" --data "$DATA" \
  --mode "${DIST_VGG_EVAL_MODE:-dense}" --scales "${DIST_VGG_EVAL_SCALES:-256,384,512}" \
  --device "$DEVICE" --json "$OUT" "${EXTRA[@]}"
