#!/usr/bin/env bash
# A one-node SLURM on this host, from Debian's packages, started without systemd (docs/cluster notes in DESIGN):
# munged, slurmctld and slurmd as root, one partition `debug` holding this node, and accounting (slurmdbd on
# MariaDB), so that `sacct` answers as on most clusters; LSTM_ODYSSEY_CI_ACCOUNTING=0 leaves accounting out (then
# `sacct` fails, as on small clusters). The SLURM tests (tests/test_slurm.py) use it and skip with a reason where no
# `sinfo` answers; the accounting test skips where `sacct` fails. Idempotent: a running cluster is left alone.
# Needs root (CI runs as root); prints one line and exits 0 when it cannot start something, so the tests skip.
set -uo pipefail

say() { echo "slurm-local: $*" >&2; }
if sinfo -h >/dev/null 2>&1; then say "a cluster answers already"; exit 0; fi
if [ "$(id -u)" != 0 ]; then say "needs root to install and start SLURM; the SLURM tests will skip"; exit 0; fi

accounting="${LSTM_ODYSSEY_CI_ACCOUNTING:-1}"
packages="slurm-wlm munge"
[ "$accounting" = 0 ] || packages="$packages slurmdbd mariadb-server"
missing=0
for tool in slurmctld munged $([ "$accounting" = 0 ] || echo slurmdbd mariadbd); do command -v "$tool" >/dev/null || missing=1; done
if [ "$missing" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq $packages; } >/tmp/slurm-local-apt.log 2>&1 \
    || { say "could not install $packages (see /tmp/slurm-local-apt.log); the SLURM tests will skip"; exit 0; }
fi

# munge: a key only munge can read, its runtime folder, the daemon as the munge user
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
chmod 755 /run/munge
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged --force" \
  || { say "munged did not start; the SLURM tests will skip"; exit 0; }

# accounting: MariaDB (its own daemon, no systemd), a database and user for slurmdbd, slurmdbd itself
start_accounting() {
  mkdir -p /run/mysqld /var/log/slurm /run/slurm && chown mysql:mysql /run/mysqld
  if ! mariadb-admin ping >/dev/null 2>&1; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/tmp/slurm-local-mariadb.log 2>&1
    (mariadbd --user=mysql >>/tmp/slurm-local-mariadb.log 2>&1 &)
    for _ in $(seq 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  # a controller without saved state numbers its jobs from 1 again: its accounting starts afresh too, or sacct
  # would report an earlier job of the same id (submitit would take a new job for that old one)
  [ -n "$(ls -A /var/spool/slurmctld 2>/dev/null)" ] || mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db;" || return 1
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-local';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || return 1
  printf '%s\n' AuthType=auth/munge DbdHost=localhost SlurmUser=root StorageType=accounting_storage/mysql \
    StorageHost=localhost StorageUser=slurm StoragePass=slurm-local StorageLoc=slurm_acct_db \
    LogFile=/var/log/slurm/slurmdbd.log PidFile=/run/slurm/slurmdbd.pid > /etc/slurm/slurmdbd.conf
  chmod 600 /etc/slurm/slurmdbd.conf
  pgrep -x slurmdbd >/dev/null || slurmdbd || return 1
  for _ in $(seq 60); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 1; done
  sacctmgr -i add cluster local >/dev/null 2>&1 || true   # slurmctld would add it too; this makes it certain
  sacctmgr -n show cluster format=cluster | grep -qw local
}
# slurm.conf: this host as controller and the one compute node, sized by `slurmd -C`; cred_expire=15 holds a
# requeued job 16 s before it starts again (SLURM's default, 120 s, would make the requeue test slow)
host="$(hostname -s)"
node="$(slurmd -C | head -1)"
cpus="$(echo "$node" | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
memory="$(echo "$node" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
write_conf() {  # $1: the accounting lines
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
$1
NodeName=${host} CPUs=${cpus} RealMemory=$(( memory * 9 / 10 )) State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
}
storage="accounting_storage/none"
write_conf "AccountingStorageType=accounting_storage/none"
if [ "$accounting" != 0 ]; then  # sacctmgr and slurmdbd read slurm.conf, so it is written first
  write_conf "AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
  if start_accounting; then
    storage="accounting_storage/slurmdbd"
  else
    say "accounting (MariaDB + slurmdbd) did not start (see /tmp/slurm-local-mariadb.log, /var/log/slurm/slurmdbd.log); the cluster runs without it"
    write_conf "AccountingStorageType=accounting_storage/none"
  fi
fi

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  state="$(sinfo -h -o %t 2>/dev/null | head -1)"
  case "$state" in idle*|mix*|alloc*) say "node ${host} ${state} (${cpus} CPUs), ${storage}"; exit 0 ;; esac
  [ "${state%\*}" != "$state" ] || [ -z "$state" ] || scontrol update nodename="${host}" state=resume >/dev/null 2>&1
  sleep 1
done
say "the node did not become idle in a minute (sinfo: ${state:-no answer}); the SLURM tests will skip"
exit 0
