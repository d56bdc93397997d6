#!/usr/bin/env bash
# Train configuration D with the large-batch recipe (global batch 512 on 2 × 8 GPUs), initialised from A.
# Defaults are for 8-GPU nodes; change the job shape the SLURM way, on the sbatch command line, e.g.
#   sbatch --nodes=4 slurm/train_D_large_batch.sh   (global batch 512 over 32 GPUs: 16 per GPU)
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1 slurm/train_D_large_batch.sh   # CPU-only cluster
# and the rest with environment variables (DIST_VGG_DATA, DIST_VGG_RUN_ROOT, DIST_VGG_STAGE, DIST_VGG_RECIPE,
# DIST_VGG_ENGINE, DIST_VGG_PYTHON, ...: slurm/common/launch_train.sh documents each).
#SBATCH --job-name=vgg-D-large-batch
#SBATCH --nodes=2
# One task per GPU: the trainer binds task N to GPU $SLURM_LOCALID.
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
# Decoding and augmentation threads per rank (DALI's CPU stages, or the CPU input path).
#SBATCH --cpus-per-task=12
#SBATCH --time=2-00:00:00
# On preemption or node failure SLURM may put the job back in the queue; the run resumes from its folder.
#SBATCH --requeue
# SIGUSR1 to every task of the job steps (no B:, the trainer ranks must get it, not the batch shell)
# 300 s before the time limit: covers agreeing on it (check_every steps), saving E's ~1.1 GB checkpoint
# to a shared file system, and the up to 60 s by which SLURM may send the signal early or late.
#SBATCH --signal=USR1@300
# A requeued job appends to the same log instead of truncating it.
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
NET=D
# The large-batch recipe (a documented departure from the paper): global batch 512 = 2 nodes × 8 GPUs × 32, bf16
# gradient all-reduce, 25 MB buckets — what bench/scaling_model.py predicts at ≥ 95 % efficiency on 2×8 H100.
export DIST_VGG_RECIPE=${DIST_VGG_RECIPE:-large-batch-D}
# sbatch runs a spooled copy of this file: find the original to reach slurm/common/ (or set DIST_VGG_SLURM_DIR).
DIST_VGG_SLURM_DIR=${DIST_VGG_SLURM_DIR:-$(dirname "$(scontrol show job "${SLURM_JOB_ID:?submit with sbatch}" | awk -F= '/^ *Command=/ { split($2, a, " "); print a[1] }')")}
source "$DIST_VGG_SLURM_DIR/common/launch_train.sh"
