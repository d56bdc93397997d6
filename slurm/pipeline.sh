#!/usr/bin/env bash
# Submit the paper's whole training chain with dependencies (run it on the login node, not with sbatch):
#   A (S=256, random init)
#     └─ D and E at S=256 (initialised from A), then S=384 (from S=256), then jitter [256,512] (from S=384)
# Each job starts only when the one it builds on COMPLETED (--dependency=afterok); when a stage fails, the
# stages that depend on it are cancelled at once (--kill-on-invalid-dep=yes) instead of pending forever.
#
# Usage: slurm/pipeline.sh [sbatch options for every job...]
#   slurm/pipeline.sh                                   # 8-GPU-node defaults of each train_*.sh
#   slurm/pipeline.sh --partition=gpu --account=proj    # site options
#   slurm/pipeline.sh --nodes=2 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1   # CPU-only cluster
# Settings (environment; the jobs inherit them, see slurm/common/launch_train.sh):
#   DIST_VGG_PIPELINE_NETS    nets trained from A (default "D E"; any of A-LRN B C D E)
#   DIST_VGG_PIPELINE_STAGES  stages per net (default "S256 S384 jitter"; a prefix of that list)
#   DIST_VGG_DATA, DIST_VGG_RUN_ROOT, DIST_VGG_RECIPE_SET, DIST_VGG_ENGINE, DIST_VGG_PYTHON, ...  as for train_*.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fail() {
  echo "slurm/pipeline.sh: $*" >&2
  exit 2
}
command -v sbatch >/dev/null || fail "sbatch not found: run this on a SLURM login node"
for v in DIST_VGG_RECIPE DIST_VGG_RUN_DIR DIST_VGG_INIT_FROM DIST_VGG_STAGE; do
  [ -z "${!v:-}" ] || fail "$v is set, but the pipeline chooses it per stage: unset it (set DIST_VGG_RUN_ROOT to place the runs)"
done
NETS=${DIST_VGG_PIPELINE_NETS:-D E}
STAGES=${DIST_VGG_PIPELINE_STAGES:-S256 S384 jitter}
case "$STAGES" in "S256" | "S256 S384" | "S256 S384 jitter") ;; *)
  fail "DIST_VGG_PIPELINE_STAGES='$STAGES' must be 'S256', 'S256 S384' or 'S256 S384 jitter' (each stage starts from the previous one)"
  ;;
esac
script_for() { # NET → its train script
  local s=$HERE/train_${1//-/_}.sh
  [ -f "$s" ] || fail "no training script for net '$1' ($s); DIST_VGG_PIPELINE_NETS takes A-LRN, B, C, D, E"
  echo "$s"
}
for net in $NETS; do script_for "$net" >/dev/null; done
[ "${DIST_VGG_RUN_ROOT:-}" ] || export DIST_VGG_RUN_ROOT=$PWD/runs

submit() { # NET STAGE DEPENDENCY → job id
  local net=$1 stage=$2 dep=$3 opts=(--parsable --job-name="vgg-$1-$2")
  [ -n "$dep" ] && opts+=(--dependency="afterok:$dep" --kill-on-invalid-dep=yes)
  DIST_VGG_STAGE=$stage sbatch "${opts[@]}" "${SBATCH_ARGS[@]}" "$(script_for "$net")" | cut -d';' -f1
}

SBATCH_ARGS=("$@")
ids=()
a=$(submit A S256 "") || fail "sbatch of A failed"
echo "A-S256        job $a"
ids+=("$a")
for net in $NETS; do
  prev=$a
  for stage in $STAGES; do
    id=$(submit "$net" "$stage" "$prev") || fail "sbatch of $net-$stage failed"
    printf '%-13s job %s (after %s)\n' "$net-$stage" "$id" "$prev"
    ids+=("$id")
    prev=$id
  done
done
all=$(IFS=,; echo "${ids[*]}")
cat <<MSG

Submitted ${#ids[@]} jobs; runs go to $DIST_VGG_RUN_ROOT. Watch them with:
  squeue -j $all -o '%.10i %.16j %.10T %.10M %.20R'
  tail -f vgg-*-{$(IFS=,; echo "${ids[*]}")}.out          # each job's log (in this folder)
  scontrol show job <id> | grep -E 'JobState|Reason|ExitCode|Restarts'
Cancel the whole chain with:  scancel $all
MSG
# Machine-readable last line for scripts: every job id in submission order.
echo "JOBS $all"
