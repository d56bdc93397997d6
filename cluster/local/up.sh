#!/usr/bin/env bash
# Bring up a real SLURM cluster on this one machine: munged, slurmctld and N slurmd "nodes" (Debian's Slurm is
# built with MULTIPLE_SLURMD, so several slurmd share the host on different ports). Everything it writes (config,
# munge key and socket, controller state, spool, logs, PID files) lives in one state folder, so tear-down is
# `cluster/local/down.sh STATE` and nothing outside that folder changes.
#
# Usage (as root; the daemons need it):
#   eval "$(cluster/local/up.sh)"          # prints `export SLURM_CONF=... DIST_VGG_LOCAL_SLURM=...`
#   sbatch ...; squeue; sinfo
#   cluster/local/down.sh                  # uses $DIST_VGG_LOCAL_SLURM
#
# Settings (environment):
#   DIST_VGG_LOCAL_SLURM_DIR  state folder to create (default: a fresh mktemp -d under ${TMPDIR:-/tmp})
#   DIST_VGG_LOCAL_NODES      number of slurmd nodes (default 2), named node1..nodeN, all NodeAddr=127.0.0.1
#   DIST_VGG_LOCAL_CPUS       CPUs each node advertises (default: nproc); more than the host has is allowed
#                             (the nodes share the host's cores, like oversubscription)
#   DIST_VGG_LOCAL_UP_TIMEOUT seconds to wait for every node to be idle (default 60)
#
# Needs: apt-get install --no-install-recommends slurmctld slurmd slurm-client munge
# Measured facts behind the settings are in shared/ENV.md ("A real SLURM cluster on one machine").
set -euo pipefail

die() { echo "cluster/local/up.sh: $*" >&2; exit 1; }
say() { echo "cluster/local/up.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (slurmd starts job tasks as the submitting user): sudo $0"
for bin in munged slurmctld slurmd sinfo scontrol setpriv; do
  command -v "$bin" >/dev/null || die "'$bin' not found. Install: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
done
id munge >/dev/null 2>&1 || die "user 'munge' missing: install the munge package"

NODES=${DIST_VGG_LOCAL_NODES:-2}
CPUS=${DIST_VGG_LOCAL_CPUS:-$(nproc)}
UP_TIMEOUT=${DIST_VGG_LOCAL_UP_TIMEOUT:-60}
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "DIST_VGG_LOCAL_NODES=$NODES: must be a positive integer"
[[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "DIST_VGG_LOCAL_CPUS=$CPUS: must be a positive integer"

if [ -n "${DIST_VGG_LOCAL_SLURM_DIR:-}" ]; then
  STATE=$DIST_VGG_LOCAL_SLURM_DIR
  [ ! -e "$STATE/slurm.conf" ] || die "$STATE already holds a cluster: run cluster/local/down.sh $STATE first"
  mkdir -p "$STATE"
else
  STATE=$(mktemp -d "${TMPDIR:-/tmp}/dist-vgg-slurm.XXXXXX")
fi
STATE=$(cd "$STATE" && pwd)
chmod 755 "$STATE"
# A failed start stops whatever it had started (keeping the logs for reading).
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
trap 'rc=$?; if [ $rc != 0 ]; then DIST_VGG_LOCAL_KEEP=1 "$HERE/down.sh" "$STATE" >&2; echo "cluster/local/up.sh: logs kept in $STATE/log" >&2; fi' EXIT
mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/log" "$STATE/run" "$STATE/munge"

# A port nobody listens on. Daemon ports stay above 41000: jobs derive MASTER_PORT as 20000 + job id % 20000.
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((41000 + RANDOM % 19000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free TCP port found between 41000 and 60000"
}

# --- munge: its own key, socket, pid and log in the state folder (the host's munged, if any, is untouched).
# It runs as the `munge` user when that user can reach the state folder; under a private parent folder (e.g.
# pytest's /tmp/pytest-of-root, mode 700) it runs as root with --force instead.
if setpriv --reuid=munge --regid=munge --init-groups -- test -x "$STATE" 2>/dev/null; then
  MUNGE_AS=(setpriv --reuid=munge --regid=munge --init-groups --)
  MUNGE_OWNER=munge:munge
else
  say "the munge user cannot reach $STATE: running munged as root"
  MUNGE_AS=()
  MUNGE_OWNER=root:root
fi
chown "$MUNGE_OWNER" "$STATE/munge"
chmod 700 "$STATE/munge"
head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
chown "$MUNGE_OWNER" "$STATE/munge/munge.key"
chmod 400 "$STATE/munge/munge.key"
MUNGE_SOCKET=$STATE/munge/munge.socket
# setpriv execs (no fork), so $! is munged's own PID.
setsid "${MUNGE_AS[@]}" munged --foreground --force \
  --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" --pid-file="$STATE/munge/munged.pid" \
  --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed" \
  </dev/null >>"$STATE/log/munged.out" 2>&1 &
echo $! >"$STATE/run/munged.pid"
# The socket folder must be searchable by every user who submits jobs.
for _ in $(seq 100); do [ -S "$MUNGE_SOCKET" ] && break; sleep 0.1; done
[ -S "$MUNGE_SOCKET" ] || die "munged did not start: $(tail -n 3 "$STATE/log/munged.out" "$STATE/munge/munged.log" 2>/dev/null | tr '\n' ' ')"
chmod 711 "$STATE/munge"

# --- slurm.conf
CTLD_PORT=$(free_port)
HOST=$(hostname -s)
FIRST_JOB_ID=$((1000 + RANDOM % 8000)) # two local clusters at once rarely share job ids (and MASTER_PORTs)
{
  cat <<EOF
# Written by cluster/local/up.sh: a one-machine test cluster. State and logs: $STATE
ClusterName=distvgg
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Our own munged's socket; a short credential lifetime lets a requeued job start again at once (default: 121 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.conf.pid
SlurmdPidFile=$STATE/run/slurmd-%n.conf.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers and no need for them here.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# No slurmdbd: finished jobs are read with scontrol (kept MinJobAge seconds) and from the jobcomp file.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
MinJobAge=600
# A node whose slurmd restarts comes back by itself.
ReturnToService=2
# Default intervals let an eligible job wait ~30 s; these start it within ~2 s.
SchedulerParameters=sched_interval=2,bf_interval=1
MpiDefault=none
SwitchType=switch/none
# Seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit.
KillWait=10
InactiveLimit=0
FirstJobId=$FIRST_JOB_ID
# Nodes advertise what the config says (they share this host's cores).
SlurmdParameters=config_overrides
EOF
  names=()
  for i in $(seq "$NODES"); do
    echo "NodeName=node$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$(free_port) CPUs=$CPUS RealMemory=1000 State=UNKNOWN"
    names+=("node$i")
  done
  echo "PartitionName=local Nodes=$(IFS=,; echo "${names[*]}") Default=YES MaxTime=INFINITE State=UP"
} >"$STATE/slurm.conf"
export SLURM_CONF=$STATE/slurm.conf
printf 'export SLURM_CONF=%q DIST_VGG_LOCAL_SLURM=%q\n' "$SLURM_CONF" "$STATE" >"$STATE/env.sh"

# --- daemons, each in its own session (so a Ctrl-C in this terminal does not reach them), PIDs saved.
setsid slurmctld -D -c -i -f "$SLURM_CONF" </dev/null >>"$STATE/log/slurmctld.out" 2>&1 &
echo $! >"$STATE/run/slurmctld.pid"
for i in $(seq "$NODES"); do
  setsid slurmd -D -N "node$i" -f "$SLURM_CONF" </dev/null >>"$STATE/log/slurmd-node$i.out" 2>&1 &
  echo $! >"$STATE/run/slurmd-node$i.pid"
done

# --- wait until every node is idle (poll with a deadline).
deadline=$((SECONDS + UP_TIMEOUT))
while :; do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle"' | sort -u | wc -l || true)
  [ "$idle" -ge "$NODES" ] && break
  for f in "$STATE"/run/slurmctld.pid "$STATE"/run/slurmd-node*.pid; do
    pid=$(cat "$f")
    if [ ! -d "/proc/$pid" ] || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
      die "$(basename "$f" .pid) exited during start-up; see $STATE/log/ ($(tail -n 3 "$STATE/log/$(basename "$f" .pid).out" "$STATE/log/$(basename "$f" .pid).log" 2>/dev/null | tr '\n' ' '))"
    fi
  done
  if [ $SECONDS -ge $deadline ]; then
    sinfo -N >&2 || true
    die "nodes not idle after ${UP_TIMEOUT}s; see $STATE/log/"
  fi
  sleep 0.2
done
say "cluster up: $NODES nodes x $CPUS CPUs, state and logs in $STATE"
say "tear down with: cluster/local/down.sh $STATE"
cat "$STATE/env.sh"
