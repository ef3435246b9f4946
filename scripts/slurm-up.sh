#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine (as root), for the Slurm tests and local trials:
# munged + slurmctld + slurmd from Debian's slurm-wlm, two partitions on the one node, as a site has them:
# "cpu" (the default) and "gpu" (no GPUs here: the tests check that jobs land where the config sends them),
# every core in each. Stop it with scripts/slurm-down.sh (by PID files). Idempotent: a running cluster with
# this configuration is left alone; one with another (an older version of this script) is restarted.
#   sudo scripts/slurm-up.sh && sinfo
set -euo pipefail
STATE=${LORARANK_SLURM_STATE:-/var/tmp/lorarank-slurm}
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
mkdir -p "$STATE"/{spool,state,log} /etc/slurm /run/munge /var/lib/munge /var/log/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid 2>/dev/null || munged --force --pid-file=/run/munge/munged.pid
fi
host=$(hostname -s)
mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 ))
# The executor plugin's job step does not pass SLURM_CONF on: the config must be at the default path.
conf=$(mktemp)
trap 'rm -f "$conf"' EXIT
cat > "$conf" <<CONF
ClusterName=lorarank
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF
if [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null && sinfo -h >/dev/null 2>&1; then
  if cmp -s "$conf" /etc/slurm/slurm.conf; then
    echo "slurm already running (state in $STATE)"; exit 0
  fi
  bash "$(dirname "$0")/slurm-down.sh" >/dev/null
fi
cp "$conf" /etc/slurm/slurm.conf
slurmctld -i
slurmd
for _ in $(seq 1 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qE "idle|mix|alloc"; then echo "slurm up: $(sinfo -h -o '%P %D %t %c')"; exit 0; fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 0.5
done
echo "slurm did not come up; see $STATE/log" >&2
exit 1
