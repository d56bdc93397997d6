#!/usr/bin/env bash
# Shard ImageNet across nodes: data_prep under MPI (`srun --mpi=pmi2`, MPICH's PMI-2 as shipped with mpi4py's
# `mpich` wheel). Every rank computes the same global plan and writes a disjoint set of shards; rank 0 writes the
# manifest. The result is byte-identical to a single-process run, whatever the node count.
# Change the job shape on the sbatch command line, e.g.  sbatch --nodes=8 slurm/shard_imagenet.sh
#SBATCH --job-name=vgg-shards
#SBATCH --nodes=4
# One MPI rank per node; each rank forks --workers processes (one per CPU given to it).
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
# data_prep resumes: shards whose checksum matches are kept, the rest redone.
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
#
# Settings (environment variables):
#   DIST_VGG_IMAGENET   ImageNet as you have it: the ILSVRC2012 archives, or train/ and val/ folders (required).
#   DIST_VGG_DATA       output shard folder (default: $SLURM_SUBMIT_DIR/data/shards); the training scripts read it.
#   DIST_VGG_PYTHON     Python with dist-vgg, data_prep and mpi4py installed (default: `python` on PATH).
#   DIST_VGG_MPI        srun's MPI plugin (default pmi2: MPICH from PyPI; use pmix for Open MPI builds).
#   DIST_VGG_PREP_ARGS  extra data_prep options, e.g. "--resize-shorter 512 --shard-bytes 256MB".
set -euo pipefail
fail() {
  echo "[dist-vgg slurm] ERROR: $*" >&2
  exit 2
}
[ -n "${SLURM_JOB_ID:-}" ] || fail "not inside a SLURM job: submit with sbatch slurm/shard_imagenet.sh"
PY=${DIST_VGG_PYTHON:-python}
command -v "$PY" >/dev/null || fail "DIST_VGG_PYTHON=$PY is not an executable; point it at the Python that has dist-vgg installed"
SRC=${DIST_VGG_IMAGENET:-}
[ -n "$SRC" ] || fail "set DIST_VGG_IMAGENET to the ImageNet folder (archives or train/ + val/), e.g. DIST_VGG_IMAGENET=/datasets/imagenet sbatch slurm/shard_imagenet.sh"
[ -d "$SRC" ] || fail "DIST_VGG_IMAGENET=$SRC is not a folder"
OUT=${DIST_VGG_DATA:-${SLURM_SUBMIT_DIR:-$PWD}/data/shards}
echo "[dist-vgg slurm $(date -u +%FT%TZ)] job $SLURM_JOB_ID SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}" \
  "nodes=$SLURM_JOB_NODELIST ranks=${SLURM_NTASKS:-?} src=$SRC out=$OUT"
# data_prep's workers are processes: keep each one's math libraries single-threaded.
export OMP_NUM_THREADS=1
# shellcheck disable=SC2206  # word splitting of the user's extra arguments is intended
EXTRA=(${DIST_VGG_PREP_ARGS:-})
exec srun --mpi="${DIST_VGG_MPI:-pmi2}" --kill-on-bad-exit=1 \
  "$PY" -m data_prep imagenet "$SRC" --out "$OUT" --workers "${SLURM_CPUS_PER_TASK:-1}" "${EXTRA[@]}"
