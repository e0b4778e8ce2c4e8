#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost for the `slurm`-marked tests (Debian 12, root, no systemd).
#
#   .ci/slurm.sh install   # apt-get slurmctld slurmd slurm-client munge slurmdbd mariadb-server (~40 s)
#   .ci/slurm.sh start     # munge, MariaDB, slurmdbd, slurmctld, slurmd; returns once the node is IDLE (~5 s)
#   eval "$(.ci/slurm.sh env)"   # exports SLURM_CONF (sbatch, squeue, sacct and submitit need it)
#   python -m pytest -m slurm tests/
#   .ci/slurm.sh stop      # ends only the daemons this script started (PIDs recorded under $SLURM_CI_DIR/pids)
#   .ci/slurm.sh status    # sinfo + squeue
#
# Partitions: `debug` (default, PriorityTier=1, PreemptMode=REQUEUE, GraceTime=30) and `high` (PriorityTier=2):
# a job in `high` that needs the node's CPUs preempts (requeues) running `debug` jobs, which is how the tests
# exercise real preemption. Accounting goes through slurmdbd + MariaDB because submitit reads job states from sacct.
#
# Environment: SLURM_CI_DIR (default /tmp/slurm_ci) holds config, state, logs, database and PIDs;
# SLURM_CI_ACCT=dbd|none (none: no sacct, then cancelled jobs make submitit wait forever); SLURM_CI_AUTH=munge|none.
set -euo pipefail
D=${SLURM_CI_DIR:-/tmp/slurm_ci}
ACCT=${SLURM_CI_ACCT:-dbd}
AUTH=${SLURM_CI_AUTH:-munge}
export SLURM_CONF=$D/etc/slurm.conf
P=$D/pids

wait_for() { # wait_for <seconds> <cmd...>
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      echo "timeout waiting for: $*" >&2; tail -n 30 "$D"/log/*.log >&2 || true; return 1
    fi
    sleep 0.25
  done
}

spawn() { # spawn <name> <cmd...>: start in the background and record the PID
  local n=$1; shift
  nohup "$@" >"$D/log/$n.out" 2>&1 &
  echo $! >"$P/$n.pid"
}

node_idle() { scontrol show node localhost 2>/dev/null | grep -qE 'State=IDLE( |$)'; }

install() {
  local pk="slurmctld slurmd slurm-client"
  [ "$AUTH" = munge ] && pk="$pk munge"
  [ "$ACCT" = dbd ] && pk="$pk slurmdbd mariadb-server"
  apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pk
}

write_slurm_conf() {
  local cpus mem auth cred acct=none
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 512 ))
  if [ "$AUTH" = munge ]; then auth=auth/munge cred=cred/munge; else auth=auth/none cred=cred/none; fi
  [ "$ACCT" = dbd ] && acct=slurmdbd
  # cred_expire=10: a requeued job may start again after cred_expire+1 s (121 s by default).
  # DefMemPerCPU: without it every job asks for the whole node's memory and jobs run one at a time.
  # preempt_send_user_signal: the job's --signal (submitit: USR2) is sent on preemption (22.05 spelling).
  cat >"$SLURM_CONF" <<EOF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=$auth
CredType=$cred
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
MailProg=/bin/true
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
StateSaveLocation=$D/state/ctld
SlurmdSpoolDir=$D/state/d
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/$acct
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
KillWait=5
MinJobAge=300
InactiveLimit=0
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=30
PartitionName=high Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

start_munge() {
  [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  spawn munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
  wait_for 10 sh -c 'munge -n | unmunge'
}

start_accounting() { # MariaDB refuses a socket in a root-owned directory: its directories belong to mysql
  local auth=auth/none
  [ "$AUTH" = munge ] && auth=auth/munge
  mkdir -p "$D/db" "$D/dbrun" && chown mysql:mysql "$D/db" "$D/dbrun"
  [ -d "$D/db/mysql" ] || mariadb-install-db --user=mysql --datadir="$D/db" \
      --auth-root-authentication-method=normal --skip-test-db >"$D/log/db_install.log" 2>&1
  spawn mariadbd mariadbd --no-defaults --user=mysql --datadir="$D/db" --socket="$D/dbrun/mysqld.sock" \
      --port=3307 --bind-address=127.0.0.1 --pid-file="$D/dbrun/mysqld.pid" \
      --innodb-buffer-pool-size=128M --log-error="$D/dbrun/mysqld.err"
  wait_for 60 mariadb-admin --socket="$D/dbrun/mysqld.sock" -uroot ping
  mariadb --socket="$D/dbrun/mysqld.sock" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  cat >"$D/etc/slurmdbd.conf" <<EOF
AuthType=$auth
DbdHost=localhost
SlurmUser=root
DebugLevel=info
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$D/etc/slurmdbd.conf"  # slurmdbd refuses a world-readable conf
  spawn slurmdbd slurmdbd -D        # finds slurmdbd.conf next to $SLURM_CONF
  wait_for 60 sacctmgr -n show cluster
}

start() {
  if [ -f "$P/slurmctld.pid" ] && kill -0 "$(cat "$P/slurmctld.pid")" 2>/dev/null; then
    echo "already running (SLURM_CONF=$SLURM_CONF)"; return 0
  fi
  mkdir -p "$D"/{etc,state/ctld,state/d,log,run,pids}
  write_slurm_conf
  [ "$AUTH" = munge ] && start_munge
  [ "$ACCT" = dbd ] && start_accounting
  spawn slurmctld slurmctld -D
  spawn slurmd slurmd -D -N localhost  # -N: node name independent of the machine's hostname
  wait_for 60 node_idle
  sinfo
}

stop() { # reverse order; only the PIDs we recorded
  local n p
  for n in slurmd slurmctld slurmdbd mariadbd munged; do
    [ -f "$P/$n.pid" ] || continue
    p=$(cat "$P/$n.pid"); kill "$p" 2>/dev/null || true
    for _ in $(seq 1 80); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    rm -f "$P/$n.pid"
  done
}

status() { sinfo; squeue; }

env() { echo "export SLURM_CONF=$SLURM_CONF"; }

case "${1:-}" in
  install|start|stop|status|env) "$1" ;;
  *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
