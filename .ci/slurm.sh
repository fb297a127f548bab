#!/usr/bin/env bash
# A single-node Slurm (with job accounting) on this machine, for the tests of the Slurm executor.
#
#   .ci/slurm.sh start    install the Debian packages if needed, then start munged, MariaDB, slurmdbd,
#                         slurmctld and slurmd (each only if it is not already answering); idempotent
#   .ci/slurm.sh stop     stop, by pid, only the daemons a previous `start` started
#   .ci/slurm.sh status   what runs, sinfo and the last lines of the logs
#
# Needs root (or sudo). Everything this script writes lives in $LOWRES_SLURM_DIR
# (default /var/tmp/lowres_clip_slurm: state, spool, logs, pid files, the list of daemons it
# started) and in /etc/slurm/slurm.conf + slurmdbd.conf, which it writes only when they are
# absent or were written by it (a machine with its own Slurm configuration is left alone).
# Recipe: slurm.conf with SlurmUser=root, auth/munge, proctrack/linuxproc, task/none (no cgroups),
# cons_tres/CR_Core, one node (all CPUs, RealMemory below the machine's), one partition `debug`,
# kill_invalid_depend; accounting through slurmdbd + MariaDB because submitit reads job states
# with sacct.
set -euo pipefail

STATE=${LOWRES_SLURM_DIR:-/var/tmp/lowres_clip_slurm}
CLUSTER=lowres
PARTITION=${LOWRES_SLURM_PARTITION:-debug}
MARK="# written by lowres_clip .ci/slurm.sh"
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
DB_USER=slurm
DB_PASS=lowres_clip_ci
DB_NAME=slurm_acct_db
MYSQL_SOCK=/run/mysqld/mysqld.sock
MYSQL_PID=/run/mysqld/lowres_clip.pid  # in a folder the mysql user may write
STARTED=$STATE/started  # lines "name pidfile" of the daemons this script started

log() { echo "[slurm.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
  else die "needs root or sudo to run: $*"; fi
}

install_packages() {
  local missing=()
  for bin in sbatch slurmctld slurmd slurmdbd munged mariadbd; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing slurm-wlm slurmdbd munge mariadb-server (missing: ${missing[*]})"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >/dev/null
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every second until it succeeds.
wait_for() {
  local what=$1 limit=$2; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "$what did not come up within ${limit}s (logs: $STATE/log)"
}

note_started() { echo "$1 $2" >>"$STARTED"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_ok; then log "munged already answers"; return 0; fi
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --force
  wait_for "munged" 20 munge_ok
  note_started munged /run/munge/munged.pid
}

mysql_ok() { mariadb-admin --socket="$MYSQL_SOCK" ping; }

start_mariadb() {
  if mysql_ok >/dev/null 2>&1; then log "MariaDB already answers"; else
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/log/mariadb-install.log" 2>&1
    fi
    # mariadbd itself (not mysqld_safe) so that the pid file names the server we stop later;
    # no TCP port: slurmdbd reaches it through the socket (StorageHost=localhost)
    setsid nohup mariadbd --user=mysql --datadir=/var/lib/mysql --socket="$MYSQL_SOCK" \
      --pid-file="$MYSQL_PID" --skip-networking \
      >"$STATE/log/mariadb.log" 2>&1 &
    wait_for "MariaDB" 60 mysql_ok
    note_started mariadb "$MYSQL_PID"
  fi
  if [ ! -e "$STATE/ctld/job_state" ] && ! pid_alive "$STATE/pid/slurmdbd.pid"; then
    # a controller without saved state numbers its jobs from 1 again: old accounting records of
    # the same ids would give sacct (and so submitit) stale states, so accounting starts afresh too
    mariadb --socket="$MYSQL_SOCK" -e "DROP DATABASE IF EXISTS $DB_NAME;"
  fi
  mariadb --socket="$MYSQL_SOCK" -e "
    CREATE DATABASE IF NOT EXISTS $DB_NAME;
    CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
    FLUSH PRIVILEGES;"
}

# ours FILE: true when FILE is absent or was written by this script.
ours() { [ ! -e "$1" ] || head -1 "$1" | grep -qF "$MARK"; }

write_configs() {
  local host mem cpus
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)  # MiB, below the machine's
  ours "$CONF" || die "$CONF exists and was not written by this script; refusing to overwrite it"
  ours "$DBD_CONF" || die "$DBD_CONF exists and was not written by this script; refusing to overwrite it"
  mkdir -p /etc/slurm "$STATE"/{ctld,spool,log,pid}
  cat >"$CONF" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
DependencyParameters=kill_invalid_depend
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/pid/slurmctld.pid
SlurmdPidFile=$STATE/pid/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MailProg=/bin/true
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DBD_CONF" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/pid/slurmdbd.pid
EOF
  chmod 0600 "$DBD_CONF"
}

start_slurm() {
  if ! pid_alive "$STATE/pid/slurmdbd.pid"; then
    slurmdbd
    wait_for "slurmdbd" 60 sacctmgr -n list cluster
    note_started slurmdbd "$STATE/pid/slurmdbd.pid"
  fi
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  if ! pid_alive "$STATE/pid/slurmctld.pid"; then
    slurmctld
    wait_for "slurmctld" 60 scontrol ping
    note_started slurmctld "$STATE/pid/slurmctld.pid"
  fi
  if ! pid_alive "$STATE/pid/slurmd.pid"; then
    slurmd
    note_started slurmd "$STATE/pid/slurmd.pid"
  fi
  node_idle() { sinfo -h -N -o "%t" | grep -qE "^(idle|mix|alloc)"; }
  wait_for "the node (sinfo idle)" 60 node_idle
  # a node drained by an earlier, unclean stop is put back into service
  scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
}

cmd_start() {
  [ "$(id -u)" = 0 ] || { exec sudo -E "$0" start; }
  install_packages
  mkdir -p "$STATE"/{ctld,spool,log,pid}
  touch "$STARTED"
  start_munge
  write_configs
  start_mariadb
  start_slurm
  log "up: partition $PARTITION on $(hostname -s) ($(nproc) CPUs); state and logs in $STATE"
}

cmd_stop() {
  [ "$(id -u)" = 0 ] || { exec sudo -E "$0" stop; }
  [ -f "$STARTED" ] || { log "nothing started by this script"; return 0; }
  # stop in reverse order of starting, each by the pid in its pid file
  tac "$STARTED" | while read -r name pidfile; do
    if pid_alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      if kill -0 "$pid" 2>/dev/null; then log "$name ($pid) ignores SIGTERM; sending SIGKILL"; kill -9 "$pid" || true; fi
      log "stopped $name ($pid)"
    fi
  done
  rm -f "$STARTED"
}

cmd_status() {
  local rc=0
  munge_ok && echo "munged: up" || { echo "munged: down"; rc=1; }
  mysql_ok >/dev/null 2>&1 && echo "mariadb: up" || { echo "mariadb: down"; rc=1; }
  for d in slurmdbd slurmctld slurmd; do
    pid_alive "$STATE/pid/$d.pid" && echo "$d: up (pid $(cat "$STATE/pid/$d.pid"))" || { echo "$d: down"; rc=1; }
  done
  [ -f "$STARTED" ] && echo "started by this script: $(awk '{print $1}' "$STARTED" | xargs)"
  sinfo 2>/dev/null || rc=1
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
