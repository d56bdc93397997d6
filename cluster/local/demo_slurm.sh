#!/usr/bin/env bash
# The SLURM flow end to end on one workstation, through the real scripts users submit on a cluster:
#   local cluster up (munge, slurmctld, 2 slurmd nodes)
#   → sbatch slurm/shard_imagenet.sh   (synthetic ImageNet-layout data → shards, 2 MPI ranks on 2 nodes)
#   → sbatch slurm/train_A.sh          (tiny A, 2 nodes × 1 rank, gloo; starts with the preflight check)
#   → sbatch slurm/train_D.sh          (tiny D initialised from A; --dependency=afterok on A)
#   → sbatch slurm/eval.sh             (dense evaluation of D; --dependency=afterok on D)
#   → cluster torn down (also on Ctrl-C or failure)
# CPU only, a few minutes on 2 cores. Needs root and: apt-get install slurmctld slurmd slurm-client munge
#
# Settings (environment):
#   DIST_VGG_DEMO_DIR   output folder: data, runs, job logs, eval JSON (default: ./demo_slurm_out; kept)
#   DIST_VGG_PYTHON     Python with dist-vgg's requirements (default: the checkout's .venv/bin/python if present)
#   DIST_VGG_DEMO_STEPS training steps per stage (default 20)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$(mkdir -p "${DIST_VGG_DEMO_DIR:-$PWD/demo_slurm_out}" && cd "${DIST_VGG_DEMO_DIR:-$PWD/demo_slurm_out}" && pwd)
STEPS=${DIST_VGG_DEMO_STEPS:-20}
say() { echo "demo-slurm: $*"; }
die() {
  echo "demo-slurm: ERROR: $*" >&2
  exit 1
}

if [ -z "${DIST_VGG_PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then DIST_VGG_PYTHON=$REPO/.venv/bin/python; else DIST_VGG_PYTHON=python; fi
fi
export DIST_VGG_PYTHON
# The checkout importable inside the jobs, whether or not dist-vgg is pip-installed.
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

# --- the cluster, torn down whatever happens next.
eval "$("$REPO/cluster/local/up.sh")"
trap 'DIST_VGG_LOCAL_KEEP=0 "$REPO/cluster/local/down.sh" "$DIST_VGG_LOCAL_SLURM"' EXIT
cd "$OUT"

# Wait for a job to end (poll with a deadline); print its state and return non-zero unless COMPLETED.
wait_job() { # JOB_ID WHAT DEADLINE_S
  local id=$1 what=$2 deadline=$((SECONDS + $3)) state
  while :; do
    state=$(scontrol show job -o "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
    case "$state" in
      COMPLETED)
        say "$what (job $id) COMPLETED"
        return 0
        ;;
      FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL)
        tail -n 30 "$OUT"/*-"$id".out >&2 || true
        die "$what (job $id) ended $state"
        ;;
    esac
    [ $SECONDS -lt "$deadline" ] || die "$what (job $id) still $state after $3 s"
    sleep 1
  done
}

# Job shape for the one-host cluster: 2 nodes × 1 task, no GPUs, 1 CPU per task. Settings for the scripts.
SHAPE=(--nodes=2 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1 --time=30)
export DIST_VGG_DATA=$OUT/shards DIST_VGG_RUN_ROOT=$OUT/runs DIST_VGG_RECIPE_SET=tiny DIST_VGG_PG_TIMEOUT_S=60
export DIST_VGG_TRAIN_ARGS="--set schedule.max_steps=$STEPS --set optim.global_batch=16 --set optim.max_micro_batch=8 --set runtime.log_every=5"

say "synthetic ImageNet-layout data (8 classes) in $OUT/raw"
rm -rf "$OUT/raw"
"$DIST_VGG_PYTHON" -m data_prep synthetic "$OUT/raw" --classes 8 --train-per-class 24 --val-per-class 8 --size small >/dev/null

say "sbatch slurm/shard_imagenet.sh on 2 nodes (srun --mpi=pmi2)"
shard=$(DIST_VGG_IMAGENET=$OUT/raw DIST_VGG_PREP_ARGS="--shard-samples 32 --overwrite" \
  sbatch --parsable "${SHAPE[@]}" "$REPO/slurm/shard_imagenet.sh")
wait_job "$shard" "sharding" 300

say "sbatch slurm/train_A.sh, then slurm/train_D.sh (afterok) and slurm/eval.sh (afterok)"
a=$(sbatch --parsable "${SHAPE[@]}" "$REPO/slurm/train_A.sh")
d=$(sbatch --parsable "${SHAPE[@]}" --dependency="afterok:$a" --kill-on-invalid-dep=yes "$REPO/slurm/train_D.sh")
ev=$(DIST_VGG_EVAL_RUNS=$OUT/runs/tiny-D DIST_VGG_EVAL_SCALES=37 DIST_VGG_EVAL_OUT=$OUT/eval.json \
  sbatch --parsable "${SHAPE[@]}" --dependency="afterok:$d" --kill-on-invalid-dep=yes "$REPO/slurm/eval.sh")
squeue -o '%.8i %.12j %.10T %.22R'
wait_job "$a" "train A" 600
grep -E '^preflight: ' "$OUT/vgg-A-$a.out" || true
wait_job "$d" "train D from A" 600
grep -E 'init-from-A' "$OUT/vgg-D-$d.out" || true
wait_job "$ev" "eval" 300
tail -n 8 "$OUT/vgg-eval-$ev.out"
say "done: logs, runs and eval.json in $OUT"
