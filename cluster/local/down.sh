#!/usr/bin/env bash
# Tear down a cluster made by cluster/local/up.sh: cancel its jobs, stop job processes and daemons by the PIDs
# it saved (never by name: other clusters or a host munged may run beside it), and remove its state folder.
# Safe to run twice, and on a half-started cluster.
#
# Usage: cluster/local/down.sh [STATE]     (default: $DIST_VGG_LOCAL_SLURM)
#   DIST_VGG_LOCAL_KEEP=1  keep the state folder (logs) after stopping everything
set -uo pipefail

STATE=${1:-${DIST_VGG_LOCAL_SLURM:-}}
if [ -z "$STATE" ]; then
  echo "cluster/local/down.sh: which cluster? Pass its state folder or set DIST_VGG_LOCAL_SLURM" >&2
  exit 2
fi
if [ ! -d "$STATE" ]; then
  echo "cluster/local/down.sh: $STATE does not exist (already torn down?)" >&2
  exit 0
fi
STATE=$(cd "$STATE" && pwd)
[ -f "$STATE/slurm.conf" ] || [ -d "$STATE/run" ] || {
  echo "cluster/local/down.sh: $STATE is not a cluster/local state folder (no slurm.conf, no run/)" >&2
  exit 2
}
export SLURM_CONF=$STATE/slurm.conf

alive() { # running and not a zombie (kill -0 succeeds on zombies)
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Processes that belong to this cluster's jobs: slurmstepd and task processes inherit this SLURM_CONF from
# slurmd / sbatch. A user shell that sourced env.sh has it too, so require a job id or a slurmstepd.
job_pids() {
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = $$ ] && continue
    grep -qszxF "SLURM_CONF=$SLURM_CONF" "$d/environ" 2>/dev/null || continue
    if grep -qsz '^SLURM_JOB_ID=' "$d/environ" 2>/dev/null || grep -qs '^slurmstepd' "$d/cmdline" 2>/dev/null; then
      echo "$pid"
    fi
  done
}

stop_pids() { # TERM, wait up to 10 s, then KILL
  local pids=("$@") p deadline
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null
  deadline=$((SECONDS + 10))
  while [ $SECONDS -lt $deadline ]; do
    local any=0
    for p in "${pids[@]}"; do alive "$p" && any=1; done
    [ $any = 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null
  sleep 0.2
}

# 1. Cancel the jobs while the controller still runs (SLURM then signals their steps itself).
if [ -f "$STATE/run/slurmctld.pid" ] && alive "$(cat "$STATE/run/slurmctld.pid")"; then
  timeout 10 scancel --full --quiet --partition=local 2>/dev/null || true
  deadline=$((SECONDS + 15))
  while [ $SECONDS -lt $deadline ]; do
    [ -z "$(timeout 5 squeue -h -t PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED,REQUEUED -o %i 2>/dev/null)" ] && break
    sleep 0.2
  done
fi

# 2. Whatever job processes are left, by PID.
mapfile -t left < <(job_pids)
stop_pids "${left[@]}"

# 3. The daemons, by their saved PIDs: nodes, controller, munge last (the others use it while stopping).
daemon_pids=()
for f in "$STATE"/run/slurmd-node*.pid "$STATE/run/slurmctld.pid"; do
  [ -f "$f" ] && alive "$(cat "$f")" && daemon_pids+=("$(cat "$f")")
done
stop_pids "${daemon_pids[@]}"
if [ -f "$STATE/run/munged.pid" ] && alive "$(cat "$STATE/run/munged.pid")"; then
  stop_pids "$(cat "$STATE/run/munged.pid")"
fi

# 4. Anything still alive is a failure to report, not to hide.
rc=0
for f in "$STATE"/run/*.pid; do
  [ -f "$f" ] || continue
  if alive "$(cat "$f")"; then
    echo "cluster/local/down.sh: $(basename "$f" .pid) (PID $(cat "$f")) survived SIGKILL" >&2
    rc=1
  fi
done
mapfile -t left < <(job_pids)
if [ ${#left[@]} -gt 0 ]; then
  echo "cluster/local/down.sh: job processes survived: ${left[*]}" >&2
  rc=1
fi

if [ "${DIST_VGG_LOCAL_KEEP:-0}" = 1 ]; then
  echo "cluster/local/down.sh: stopped; state kept in $STATE" >&2
else
  rm -rf "$STATE"
  echo "cluster/local/down.sh: stopped and removed $STATE" >&2
fi
exit $rc
