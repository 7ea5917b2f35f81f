#!/usr/bin/env bash
# A one-node SLURM on this host, from Debian's packages, started without systemd (docs/cluster notes in DESIGN):
# munged, slurmctld and slurmd as root, one partition `debug` holding this node. The SLURM tests
# (tests/test_slurm.py) use it and skip with a reason where no `sinfo` answers. Idempotent: a running cluster is
# left alone. Needs root (CI runs as root); prints one line and exits 0 when it cannot start one, so the tests skip.
set -uo pipefail

say() { echo "slurm-local: $*" >&2; }
if sinfo -h >/dev/null 2>&1; then say "a cluster answers already"; exit 0; fi
if [ "$(id -u)" != 0 ]; then say "needs root to install and start SLURM; the SLURM tests will skip"; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq slurm-wlm munge; } >/tmp/slurm-local-apt.log 2>&1 \
    || { say "could not install slurm-wlm and munge (see /tmp/slurm-local-apt.log); the SLURM tests will skip"; exit 0; }
fi

# munge: a key only munge can read, its runtime folder, the daemon as the munge user
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
chmod 755 /run/munge
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged --force" \
  || { say "munged did not start; the SLURM tests will skip"; exit 0; }

# slurm.conf: this host as controller and the one compute node, sized by `slurmd -C`; cred_expire=15 holds a
# requeued job 16 s before it starts again (SLURM's default, 120 s, would make the requeue test slow)
host="$(hostname -s)"
node="$(slurmd -C | head -1)"
cpus="$(echo "$node" | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
memory="$(echo "$node" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=15
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
NodeName=${host} CPUs=${cpus} RealMemory=$(( memory * 9 / 10 )) State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  state="$(sinfo -h -o %t 2>/dev/null | head -1)"
  case "$state" in idle*|mix*|alloc*) say "node ${host} ${state} (${cpus} CPUs)"; exit 0 ;; esac
  [ "${state%\*}" != "$state" ] || [ -z "$state" ] || scontrol update nodename="${host}" state=resume >/dev/null 2>&1
  sleep 1
done
say "the node did not become idle in a minute (sinfo: ${state:-no answer}); the SLURM tests will skip"
exit 0
