# shellcheck shell=bash
# The one launcher behind slurm/train_*.sh: sourced by them after their #SBATCH header, inside the batch job.
# It turns the job's allocation and a few environment variables into one `srun` of `dist-vgg train`, one task
# per GPU (or per node slot on CPU clusters), and turns the trainer's exit code into SLURM's answer:
#   0  done                         → exit 0 (COMPLETED)
#   75 saved on SIGUSR1, requeue me → `scontrol requeue $SLURM_JOB_ID`; the rerun resumes from the run folder
#   4  saved on SIGTERM / cap hit   → exit 4 (the job stays ended: a user's scancel is respected)
#   *  anything else                → that code (FAILED); rerunning the same sbatch resumes from the last checkpoint
#
# Settings (environment variables; each has a default, so `sbatch slurm/train_E.sh` alone works):
#   DIST_VGG_PYTHON      Python that has dist-vgg installed (default: `python` on PATH, e.g. after `module load`
#                        or `source venv/bin/activate` before sbatch: the job inherits PATH).
#   DIST_VGG_DATA        shard folder written by data_prep (holds manifest.json) (default: $SLURM_SUBMIT_DIR/data/shards).
#                        `none` trains on the recipe's on-device synthetic data (benchmarks, smoke tests).
#   DIST_VGG_RUN_ROOT    where every stage's run folder lives (default: $SLURM_SUBMIT_DIR/runs).
#   DIST_VGG_RECIPE_SET  paper (A-S256, E-S384, ...) | tiny (tiny-A, tiny-D-S384: CPU-sized) (default: paper).
#   DIST_VGG_STAGE       S256 | S384 | jitter: the paper's training-scale stage (default: S256).
#   DIST_VGG_RECIPE      the recipe name, overriding the one derived from the net, stage and recipe set.
#   DIST_VGG_RUN_DIR     this stage's run folder (default: $DIST_VGG_RUN_ROOT/<recipe>); a folder holding a
#                        checkpoint resumes from it.
#   DIST_VGG_INIT_FROM   run folder or checkpoint to initialise from; `none` for none. Default: A's S=256 run for
#                        B..E at S=256 (as the paper does), the same net's S=256 run for S384, its S384 run for jitter.
#   DIST_VGG_ENGINE      ddp | deepspeed (default: the recipe's, i.e. ddp).
#   DIST_VGG_DEVICE      cuda | cpu (default: cuda when the job was given GPUs, else cpu with gloo).
#   DIST_VGG_PG_TIMEOUT_S  collective timeout in seconds: a dead or hung rank makes the others fail after this
#                        long instead of hanging (default: the recipe's runtime.pg_timeout_s).
#   DIST_VGG_PREFLIGHT   1 (default) | 0: a short all-reduce check before training that prints the bandwidth
#                        per node and names a slow one.
#   DIST_VGG_PREFLIGHT_MB  all-reduce size of that check in MiB (default 64 on GPUs, 4 on CPUs).
#   DIST_VGG_PREFLIGHT_MIN_GBPS  fail the job when a node measures below this (GB/s; default 0 = only warn).
#   DIST_VGG_EXIT_WAIT   seconds srun lets the other tasks run once one task has exited, then kills them (default 60).
#   DIST_VGG_KILL_ON_BAD_EXIT  1 (default): srun ends the step at the first non-zero exit; 0: only --wait.
#   DIST_VGG_TRAIN_ARGS  extra arguments for `dist-vgg train`, e.g. "--set schedule.max_steps=100".
# NET (set by the thin script) names the configuration: A, A-LRN, B, C, D or E.

set -euo pipefail

log() { echo "[dist-vgg slurm $(date -u +%FT%TZ)] $*"; }
fail() {
  echo "[dist-vgg slurm] ERROR: $*" >&2
  exit 2
}

: "${NET:?the thin script must set NET (A, A-LRN, B, C, D or E) before sourcing launch_train.sh}"
[ -n "${SLURM_JOB_ID:-}" ] || fail "not inside a SLURM job: submit with sbatch (e.g. sbatch slurm/train_${NET}.sh)"

PY=${DIST_VGG_PYTHON:-python}
command -v "$PY" >/dev/null || fail "DIST_VGG_PYTHON=$PY is not an executable; point it at the Python that has dist-vgg installed (or load its environment before sbatch)"
SUBMIT=${SLURM_SUBMIT_DIR:-$PWD}
RUN_ROOT=${DIST_VGG_RUN_ROOT:-$SUBMIT/runs}
STAGE=${DIST_VGG_STAGE:-S256}
RECIPE_SET=${DIST_VGG_RECIPE_SET:-paper}

# Recipe names: paper set `E-S256`, `E-S384`, `E-jitter`; tiny set `tiny-E`, `tiny-E-S384`, `tiny-E-jitter`.
recipe_for() { # NET STAGE
  case "$RECIPE_SET" in
    paper) echo "$1-$2" ;;
    tiny) if [ "$2" = S256 ]; then echo "tiny-$1"; else echo "tiny-$1-$2"; fi ;;
    *) fail "DIST_VGG_RECIPE_SET=$RECIPE_SET is not one of: paper, tiny" ;;
  esac
}
case "$STAGE" in S256 | S384 | jitter) ;; *) fail "DIST_VGG_STAGE=$STAGE is not one of: S256, S384, jitter" ;; esac
RECIPE=${DIST_VGG_RECIPE:-$(recipe_for "$NET" "$STAGE")}
RUN_DIR=${DIST_VGG_RUN_DIR:-$RUN_ROOT/$RECIPE}

# Where this stage starts from (paper section 3.1: deeper nets from A; S=384 from S=256; jitter from S=384).
SRC_NET=$NET SRC_STAGE=none # the stage this one starts from, for the message when it is missing
case "$STAGE:$NET" in
  S256:A | S256:A-LRN) ;;
  S256:*) SRC_NET=A SRC_STAGE=S256 ;;
  S384:*) SRC_STAGE=S256 ;;
  jitter:*) SRC_STAGE=S384 ;;
esac
if [ -n "${DIST_VGG_INIT_FROM:-}" ]; then
  INIT_FROM=$DIST_VGG_INIT_FROM
elif [ "$SRC_STAGE" = none ]; then
  INIT_FROM=none
else
  INIT_FROM=$RUN_ROOT/$(recipe_for "$SRC_NET" "$SRC_STAGE")
fi

# A run folder that already holds a checkpoint resumes (resume wins over warm start), so the source is only
# required for a fresh run. "Finished" means the trainer's `final` link or a committed checkpoint folder.
has_checkpoint() { compgen -G "$1/checkpoints/step-*/COMMITTED" >/dev/null; }
is_finished_source() {
  [ -e "$1/final/COMMITTED" ] || [ -e "$1/COMMITTED" ] || [ -f "$1" ]
}
if [ "$INIT_FROM" != none ] && ! has_checkpoint "$RUN_DIR" && ! is_finished_source "$INIT_FROM"; then
  set_hint=""
  [ "$RECIPE_SET" != paper ] && set_hint="DIST_VGG_RECIPE_SET=$RECIPE_SET "
  fail "$RECIPE starts from $INIT_FROM, which holds no finished checkpoint (no $INIT_FROM/final).
  Train that stage first with the same run root, e.g.
      DIST_VGG_RUN_ROOT=$RUN_ROOT ${set_hint}DIST_VGG_STAGE=$SRC_STAGE sbatch slurm/train_${SRC_NET//-/_}.sh
  or submit the whole chain with dependencies: slurm/pipeline.sh
  or point DIST_VGG_INIT_FROM at a finished run folder or checkpoint (DIST_VGG_INIT_FROM=none: no warm start)."
fi

DATA=${DIST_VGG_DATA:-$SUBMIT/data/shards}
if [ "$DATA" != none ] && [ ! -f "$DATA/manifest.json" ]; then
  fail "DIST_VGG_DATA=$DATA holds no manifest.json: write shards first (sbatch slurm/shard_imagenet.sh) or set DIST_VGG_DATA to the shard folder"
fi

# Device: GPUs when the allocation has them (SLURM_GPUS_ON_NODE), else a CPU-only cluster with gloo.
if [ -z "${DIST_VGG_DEVICE:-}" ]; then
  if [ "${SLURM_GPUS_ON_NODE:-0}" -gt 0 ] 2>/dev/null; then DEVICE=cuda; else DEVICE=cpu; fi
else
  DEVICE=$DIST_VGG_DEVICE
fi
case "$DEVICE" in cuda | cpu) ;; *) fail "DIST_VGG_DEVICE=$DEVICE is not one of: cuda, cpu" ;; esac

mkdir -p "$RUN_DIR"

# --- rendezvous: rank 0 runs on the first node of the allocation. Its NodeAddr (not its name: on some
# clusters, and on the one-host test cluster, node names do not resolve) is the master address; the port is
# derived from the job id so two jobs sharing a node do not collide, and stays the same across requeues.
first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$first_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-$first_node}
export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))

# --- threads: without this every rank starts one OpenMP thread per core of the node (ranks × cores threads).
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# --- NCCL / c10d: diagnosis and failure behaviour (harmless on CPU runs, which use gloo).
# A failed or timed-out collective aborts the communicator and raises, so a dead rank ends the job instead of
# leaving the others blocked in a kernel forever.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
# The flight recorder: a ring buffer of the last collectives of each rank (op, sizes, sequence number, state)...
export TORCH_NCCL_TRACE_BUFFER_SIZE=${TORCH_NCCL_TRACE_BUFFER_SIZE:-2000}
export TORCH_FR_BUFFER_SIZE=${TORCH_FR_BUFFER_SIZE:-$TORCH_NCCL_TRACE_BUFFER_SIZE}
# ...dumped when a collective times out, so the stuck rank and collective can be found afterwards
# (`torchfrtrace RUN/flight_recorder -p rank`) ...
export TORCH_NCCL_DUMP_ON_TIMEOUT=${TORCH_NCCL_DUMP_ON_TIMEOUT:-1}
# ...into the run folder, one file per rank (the default is /tmp of each node, lost with the job). Gloo (CPU)
# records into the same buffer but torch never dumps it by itself: dist_vgg.preflight.dump_flight_recorder()
# writes it to the same place where a collective failed (the preflight check does; see the README).
mkdir -p "$RUN_DIR/flight_recorder"
export TORCH_FR_DUMP_TEMP_FILE=${TORCH_FR_DUMP_TEMP_FILE:-$RUN_DIR/flight_recorder/rank_}
export TORCH_NCCL_DEBUG_INFO_TEMP_FILE=$TORCH_FR_DUMP_TEMP_FILE
# NCCL's own warnings (an InfiniBand port down, a fallback to TCP sockets) reach the job log; INFO is too chatty
# for weeks-long runs, set NCCL_DEBUG=INFO by hand when debugging.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# Site-specific and deliberately not set here: NCCL_SOCKET_IFNAME / NCCL_IB_HCA (which network to use) —
# export them before sbatch if your cluster's admins say so; the job inherits them.

log "job $SLURM_JOB_ID ($SLURM_JOB_NAME) SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0} nodes=$SLURM_JOB_NODELIST" \
  "tasks=${SLURM_NTASKS:-?} ($SLURM_NNODES nodes x ${SLURM_NTASKS_PER_NODE:-?}) gpus/node=${SLURM_GPUS_ON_NODE:-0} device=$DEVICE"
log "recipe=$RECIPE run_dir=$RUN_DIR init_from=$INIT_FROM data=$DATA master=$MASTER_ADDR:$MASTER_PORT"

# srun: one task per GPU/slot of the allocation. A rank that dies (node failure, OOM kill) must end the step,
# never leave the others waiting: --wait=N kills the remaining tasks N s after the first one exits (any exit
# code), and a rank blocked in a collective with a dead peer fails by itself after the collective timeout
# (gloo notices a closed peer socket at once). --kill-on-bad-exit=1 (DIST_VGG_KILL_ON_BAD_EXIT, default 1)
# ends the step at the first non-zero exit. It also SIGTERMs ranks that are still finishing a coordinated exit
# 75 (requeue) or 4 a few milliseconds behind the first one; the trainer keeps its flag-only SIGTERM handler
# installed through its own exit in that case, so those ranks still exit 75/4 (not 143).
SRUN=(srun --kill-on-bad-exit="${DIST_VGG_KILL_ON_BAD_EXIT:-1}" --wait="${DIST_VGG_EXIT_WAIT:-60}")

if [ "${DIST_VGG_PREFLIGHT:-1}" = 1 ]; then
  if [ "$DEVICE" = cuda ]; then mb_default=64; else mb_default=4; fi
  # Its own port: the trainer's rendezvous must not meet the check's lingering sockets.
  MASTER_PORT=$((MASTER_PORT + 1)) "${SRUN[@]}" "$PY" -m dist_vgg.cli preflight --device "$DEVICE" \
    --size-mb "${DIST_VGG_PREFLIGHT_MB:-$mb_default}" --min-gbps "${DIST_VGG_PREFLIGHT_MIN_GBPS:-0}" \
    --timeout-s "${DIST_VGG_PG_TIMEOUT_S:-120}" ||
    fail "the preflight all-reduce check failed (rc $?): see the lines above; the job stops before training"
fi

ARGS=(train --recipe "$RECIPE" --run-dir "$RUN_DIR" --set "runtime.device=$DEVICE")
[ "$DATA" != none ] && ARGS+=(--data "$DATA")
[ "$INIT_FROM" != none ] && ARGS+=(--init-from "$INIT_FROM")
[ -n "${DIST_VGG_ENGINE:-}" ] && ARGS+=(--engine "$DIST_VGG_ENGINE")
[ -n "${DIST_VGG_PG_TIMEOUT_S:-}" ] && ARGS+=(--set "runtime.pg_timeout_s=$DIST_VGG_PG_TIMEOUT_S")
# shellcheck disable=SC2206  # word splitting of the user's extra arguments is intended
[ -n "${DIST_VGG_TRAIN_ARGS:-}" ] && ARGS+=($DIST_VGG_TRAIN_ARGS)

log "srun $PY -m dist_vgg.cli ${ARGS[*]}"
rc=0
"${SRUN[@]}" "$PY" -m dist_vgg.cli "${ARGS[@]}" || rc=$?

case $rc in
  0) log "training finished: $RUN_DIR/final" ;;
  75)
    log "trainer saved on SIGUSR1 and asked for a requeue (exit 75): scontrol requeue $SLURM_JOB_ID" \
      "(restart $((${SLURM_RESTART_COUNT:-0} + 1)) will resume from $RUN_DIR)"
    scontrol requeue "$SLURM_JOB_ID" || fail "scontrol requeue $SLURM_JOB_ID failed: resubmit by hand; the run resumes from $RUN_DIR"
    rc=0
    ;;
  4) log "trainer saved and stopped (exit 4: SIGTERM or the requeue cap); not requeued. Resubmit to resume from $RUN_DIR" ;;
  *)
    log "training failed with exit code $rc; rerun the same sbatch command to resume from the last checkpoint in $RUN_DIR"
    if compgen -G "$RUN_DIR/flight_recorder/*" >/dev/null; then
      log "flight-recorder dumps (last collectives per rank): $RUN_DIR/flight_recorder/ (read with: torchfrtrace $RUN_DIR/flight_recorder -p rank)"
    fi
    ;;
esac
exit "$rc"
