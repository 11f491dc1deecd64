#!/usr/bin/env bash
# Stop the test cluster of tests/slurm/start_slurm.sh: cancel its jobs, then end slurmd, slurmctld and (if
# start_slurm.sh started it) munged by the pids in their pid files. Safe to call twice or after a failed start.
set -uo pipefail

STATE="${HVPL_SLURM_DIR:-/tmp/hvpl-slurm}"

stop_pid_file() {   # $1 = pid file, $2 = name
  local pid
  [ -f "$1" ] || return 0
  pid="$(cat "$1")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stop_slurm.sh: stopped $2 (pid $pid)"
  fi
  rm -f "$1"
}

if command -v scancel >/dev/null && [ -f "$STATE/run/slurmctld.pid" ]; then
  scancel --user "$(id -un)" 2>/dev/null || true
fi
stop_pid_file "$STATE/run/slurmd.pid" slurmd
stop_pid_file "$STATE/run/slurmctld.pid" slurmctld
if [ -f "$STATE/run/started_munged" ]; then
  stop_pid_file /run/munge/munged.pid munged
  rm -f "$STATE/run/started_munged"
fi
if [ -f "$STATE/slurm.conf.orig" ]; then
  mv "$STATE/slurm.conf.orig" /etc/slurm/slurm.conf
elif [ -f "$STATE/slurm.conf.ours" ]; then
  rm -f /etc/slurm/slurm.conf "$STATE/slurm.conf.ours"
fi
exit 0
