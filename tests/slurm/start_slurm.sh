#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster on this host for tests/test_slurm.py (needs root).
#
#   tests/slurm/start_slurm.sh            # installs slurm-wlm + munge if missing, starts munged/slurmctld/slurmd
#   tests/slurm/stop_slurm.sh             # stops exactly the daemons this script started
#
# The node is this host with HVPL_SLURM_CPUS CPUs (default 2), accounting storage off (so job status comes
# from squeue), SelectType select/cons_tres, no cgroups (works in containers without systemd).
# State, logs and pid files live in $HVPL_SLURM_DIR (default /tmp/hvpl-slurm).
set -euo pipefail

STATE="${HVPL_SLURM_DIR:-/tmp/hvpl-slurm}"
CPUS="${HVPL_SLURM_CPUS:-2}"
CONF_DIR=/etc/slurm
WAIT_S="${HVPL_SLURM_WAIT_S:-60}"

die() { echo "start_slurm.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get to install them"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

mkdir -p "$STATE"/{spool/ctld,spool/d,log,run} /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null;
                                 chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }

HOST="$(hostname -s)"
MEM_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)"
# Keep a pre-existing slurm.conf for stop_slurm.sh to restore; otherwise it removes ours (a slurm.conf naming a
# stopped controller makes every SLURM client call, and Snakemake's start-up probe, hang for seconds).
if [ ! -f "$STATE/slurm.conf.orig" ] && [ ! -f "$STATE/slurm.conf.ours" ]; then
  if [ -f "$CONF_DIR/slurm.conf" ]; then cp "$CONF_DIR/slurm.conf" "$STATE/slurm.conf.orig"; else touch "$STATE/slurm.conf.ours"; fi
fi
cat > "$CONF_DIR/slurm.conf" <<CONF
# Written by hvpl tests/slurm/start_slurm.sh: single-node test cluster.
ClusterName=hvpltest
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
# No cgroup.conf needed (proctrack/linuxproc, task/none).

if [ ! -f /run/munge/munged.pid ] || ! kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
  su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force
  echo munged > "$STATE/run/started_munged"
fi
munge -n | unmunge >/dev/null || die "munge does not work"

/usr/sbin/slurmctld -i
/usr/sbin/slurmd

for _ in $(seq "$WAIT_S"); do
  state="$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)"
  if [ "$state" = "idle" ]; then
    echo "start_slurm.sh: node $HOST idle ($CPUS CPUs, ${MEM_MB} MB); state in $STATE"
    exit 0
  fi
  sleep 1
done
sinfo >&2 || true
tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
die "node $HOST did not become idle within ${WAIT_S}s"
