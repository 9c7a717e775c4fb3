#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, from Debian's packages, for the tests and for
# trying `bench submit` without a cluster: munged, MariaDB + slurmdbd (so that sacct, which
# submitit polls for job states, works), slurmctld and slurmd, all as root, everything (config,
# keys, state, logs, database) under one folder. No systemd needed.
#
#   slurm/cluster.sh start     install missing packages, write the config, start the daemons,
#                              wait until the node is idle and a smoke job shows up in sacct
#   slurm/cluster.sh stop      cancel jobs, stop the daemons this script started (recorded PIDs)
#   slurm/cluster.sh status    sinfo + squeue
#   . "$BENCH_SLURM_DIR/env.sh"   exports SLURM_CONF for sbatch/sacct/submitit (jobs inherit it)
#
# Settings (environment): BENCH_SLURM_DIR (default /tmp/bench-slurm), FAKE_GPUS=N (advertise N fake
# GPUs as GRES gpu:fake:N), PREEMPT=1 (add partition "high" that preempts the default partition
# "debug" with REQUEUE after sending the job's --signal), INSTALL=0 (never apt-get), WAIT_S (60).
#
# Why each non-default setting (found on these machines, see ../shared/notes/local-slurm):
# - AccountingStoragePass=<munge socket>: slurmctld reaches slurmdbd through this socket, not AuthInfo's.
# - cred_expire=10, bf_interval=2, sched_interval=2: a requeued job restarts in ~10 s, not ~2.5 min.
# - SlurmctldParameters=preempt_send_user_signal: preempted jobs get their --signal (submitit: USR2).
# - fake GPU devices are /dev/null clones made with mknod: slurmd wants character devices.
set -euo pipefail

DIR="${BENCH_SLURM_DIR:-/tmp/bench-slurm}"
FAKE_GPUS="${FAKE_GPUS:-0}"
PREEMPT="${PREEMPT:-0}"
INSTALL="${INSTALL:-1}"
WAIT_S="${WAIT_S:-60}"
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server-core mariadb-client-core)

say() { echo "[cluster.sh] $*"; }
die() { echo "[cluster.sh] error: $*" >&2; exit 1; }
pidfile() { echo "$DIR/pids/$1.pid"; }

alive() {  # alive NAME: its recorded process exists, is not a zombie, and runs that program
    local f p; f=$(pidfile "$1"); [ -s "$f" ] || return 1; p=$(cat "$f")
    [ -r "/proc/$p/cmdline" ] || return 1
    grep -q '^State:[[:space:]]*Z' "/proc/$p/status" 2>/dev/null && return 1
    [ "$(basename "$(tr '\0' '\n' <"/proc/$p/cmdline" | head -n 1)")" = "$1" ]
}

wait_until() {  # wait_until WHAT CMD...: poll every 0.2 s for WAIT_S seconds
    local what=$1; shift
    for _ in $(seq $((WAIT_S * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    tail -n 15 "$DIR"/log/*.log >&2 2>/dev/null || true
    die "timed out waiting for $what (logs in $DIR/log)"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }  # something listens on it

daemon() {  # daemon NAME CMD...: start in its own session, record its PID
    local name=$1; shift
    setsid "$@" </dev/null >"$DIR/log/$name.out" 2>&1 &
    echo $! >"$(pidfile "$name")"
}

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$INSTALL" = 1 ] || die "missing Debian packages: ${missing[*]} (apt-get install them, or INSTALL=1)"
    say "apt-get install ${missing[*]}"
    # Debian's policy-rc.d keeps the postinst scripts from starting the services; we start our own
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" ||
           { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }; } \
           >"/tmp/bench-slurm-apt.log" 2>&1; then
        tail -n 20 /tmp/bench-slurm-apt.log >&2; die "apt-get install failed"
    fi
}

write_config() {
    local host cpus mem sock="$DIR/run/munge.socket" gres_line="" gres_types="" preempt="" part_extra="" high=""
    host=$(hostname -s); cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc obeys those
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p'); mem=${mem:-1000}
    if [ "$FAKE_GPUS" -gt 0 ]; then
        mkdir -p "$DIR/fakedev"
        { echo "AutoDetect=off"
          if mknod "$DIR/fakedev/nvidia0" c 1 3 2>/dev/null; then
              for i in $(seq 1 $((FAKE_GPUS - 1))); do mknod "$DIR/fakedev/nvidia$i" c 1 3; done
              echo "NodeName=$host Name=gpu Type=fake File=$DIR/fakedev/nvidia[0-$((FAKE_GPUS - 1))]"
          else
              echo "NodeName=$host Name=gpu Type=fake Count=$FAKE_GPUS"
          fi; } >"$DIR/etc/gres.conf"
        gres_line="Gres=gpu:fake:$FAKE_GPUS"
        gres_types=$'GresTypes=gpu\nAccountingStorageTRES=gres/gpu'
    fi
    if [ "$PREEMPT" = 1 ]; then
        preempt=$'PreemptType=preempt/partition_prio\nPreemptMode=REQUEUE\nSlurmctldParameters=preempt_send_user_signal'
        part_extra="PriorityTier=1 GraceTime=60"
        high="PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF"
    fi
    cat >"$DIR/etc/slurm.conf" <<EOF
# written by slurm/cluster.sh
ClusterName=bench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock,cred_expire=10
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStoragePass=$sock
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$preempt
$gres_types
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP $part_extra
$high
EOF
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
# written by slurm/cluster.sh
AuthType=auth/munge
AuthInfo=socket=$sock
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=13306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
    echo "export SLURM_CONF=$DIR/etc/slurm.conf" >"$DIR/env.sh"
}

start() {
    [ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root here)"
    for d in "${DAEMONS[@]}"; do alive "$d" && die "$d is already running; run '$0 stop' first"; done
    for port in 6817 6818 6819 13306; do  # slurmctld, slurmd, slurmdbd, mariadbd: one cluster per machine
        port_busy "$port" && die "port $port is in use: another cluster runs here (stop it: BENCH_SLURM_DIR=<its folder> $0 stop)"
    done
    install_packages
    rm -rf "$DIR"; mkdir -p "$DIR"/{etc,run,log,pids,munge,db,state/ctld,state/d}
    trap 'stop >/dev/null 2>&1' EXIT  # a start that fails leaves no daemon behind
    chmod 700 "$DIR/munge"
    write_config
    export SLURM_CONF="$DIR/etc/slurm.conf"
    local sock="$DIR/run/munge.socket"

    mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
    daemon munged /usr/sbin/munged --foreground --socket="$sock" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/munge/seed" --log-file="$DIR/log/munged.log"
    wait_until munged bash -c "munge -S '$sock' -n | unmunge -S '$sock'"

    mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root --auth-root-authentication-method=socket \
        --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed ($DIR/log/mariadb-install.log)"
    daemon mariadbd /usr/sbin/mariadbd --no-defaults --datadir="$DIR/db" --socket="$DIR/run/mysqld.sock" \
        --port=13306 --bind-address=127.0.0.1 --user=root --log-error="$DIR/log/mariadbd.log" \
        --pid-file="$DIR/run/mariadbd.pid" --innodb-buffer-pool-size=64M
    wait_until mariadbd mariadb --socket="$DIR/run/mysqld.sock" -u root -e "SELECT 1"
    mariadb --socket="$DIR/run/mysqld.sock" -u root -e "
        CREATE USER 'slurm'@'localhost' IDENTIFIED BY 'slurm'; CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

    daemon slurmdbd /usr/sbin/slurmdbd -D
    wait_until slurmdbd sacctmgr -n list cluster
    daemon slurmctld /usr/sbin/slurmctld -D -i
    wait_until slurmctld scontrol ping
    daemon slurmd /usr/sbin/slurmd -D
    wait_until "node idle" bash -c "sinfo -h -o %T | grep -qx idle"
    wait_until "cluster registration" bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx bench"

    # the first job record takes a few seconds to reach slurmdbd: absorb that here
    local job; job=$(timeout "$WAIT_S" sbatch --parsable --wait -J smoke -o /dev/null -e /dev/null --wrap true) \
        || die "smoke job failed (see $DIR/log/slurmd.log)"
    wait_until "smoke job in sacct" bash -c "sacct -n -X -P -o State -j $job | grep -qx COMPLETED"
    trap - EXIT
    say "cluster up: $(sinfo -h -o '%P %D %c CPUs %G' | tr '\n' ' ')— . $DIR/env.sh to use it"
}

stop() {
    [ -d "$DIR/pids" ] || { say "nothing to stop"; return 0; }
    export SLURM_CONF="$DIR/etc/slurm.conf"
    if alive slurmctld; then
        local jobs; jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
        fi
    fi
    # stop in dependency order, waiting for each group to be gone (a restarted slurmctld must not
    # find its predecessor alive); only PIDs this script recorded, checked against their program
    for group in "slurmd slurmctld" "slurmdbd" "mariadbd munged"; do
        local names=() name
        for name in $group; do
            if alive "$name"; then kill -TERM "$(cat "$(pidfile "$name")")"; names+=("$name"); fi
        done
        for _ in $(seq 200); do
            local any=0; for name in "${names[@]}"; do alive "$name" && any=1; done
            [ $any = 0 ] && break; sleep 0.1
        done
        for name in "${names[@]}"; do
            alive "$name" && { say "$name ignored SIGTERM; SIGKILL"; kill -KILL "$(cat "$(pidfile "$name")")"; }
            rm -f "$(pidfile "$name")"
        done
    done
    say "cluster stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) export SLURM_CONF="$DIR/etc/slurm.conf"; sinfo; squeue ;;
    *) echo "usage: $0 start|stop|status   (see the header of this file)" >&2; exit 2 ;;
esac
