#!/usr/bin/env bash
# Stop the cluster scripts/slurm-up.sh started, by its PID files (munged is left running: harmless).
set -u
STATE=${LORARANK_SLURM_STATE:-/var/tmp/lorarank-slurm}
for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    rm -f "$pidfile"
  fi
done
echo "slurm stopped"
