#!/bin/bash
# A real single-node Slurm cluster on this machine (slurmctld + slurmd + munged), to run docs/sweep_slurm.sh
# under sbatch exactly as on a cluster, only smaller. Debian/Ubuntu packages: slurmctld slurmd slurm-client
# munge (or the slurm-wlm metapackage). Needs root (slurmd starts each job as its user).
#
#   bash docs/slurm/local_cluster.sh start      # write the config, start munged, slurmctld, slurmd; wait for the node
#   eval "$(bash docs/slurm/local_cluster.sh env)"   # SLURM_CONF for sbatch/squeue/scancel/scontrol in this shell
#   bash docs/slurm/local_cluster.sh status     # sinfo + squeue
#   bash docs/slurm/local_cluster.sh stop       # cancel this cluster's jobs, stop the three daemons by their pid files
#
# Everything (config, state, spool, logs, pid files, the munge key and socket) lives in $MPI_SLURM_DIR
# (default /tmp/mpi-slurm); nothing under /etc is read or changed, so it can run beside a system Slurm.
# The config is minimal: one node "mpi-node" with $MPI_SLURM_CPUS CPUs (default 2) and the machine's memory,
# one partition "debug", proctrack/linuxproc (processes tracked by parentage), task/none, no cgroups, no
# accounting; two free TCP ports on 127.0.0.1. The daemons inherit this script's CPU affinity and niceness,
# and so do the jobs: `taskset -c 1 nice -n 10 bash docs/slurm/local_cluster.sh start` keeps every job on core 1.
set -euo pipefail
DIR="${MPI_SLURM_DIR:-/tmp/mpi-slurm}"
CPUS="${MPI_SLURM_CPUS:-2}"
CRED_EXPIRE="${MPI_SLURM_CRED_EXPIRE:-10}"  # also the seconds a requeued job waits before it may start again
CONF="$DIR/slurm.conf"
NODE=mpi-node

say() { echo "local_cluster: $*"; }
die() { echo "error: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the daemon named in the pid file is running
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start() {
    [ "$(id -u)" = 0 ] || die "run as root: slurmd must start jobs as their user (or use a real cluster)"
    for b in munged mungekey slurmctld slurmd sbatch scontrol; do
        command -v "$b" >/dev/null || die "$b not found: apt-get install -y slurmctld slurmd slurm-client munge"
    done
    if alive "$DIR/slurmctld.pid" || alive "$DIR/slurmd.pid" || alive "$DIR/munge/munged.pid"; then
        die "a cluster (or part of one) is already running in $DIR (stop it first: bash $0 stop)"
    fi
    t0=$(date +%s.%N)
    rm -rf "$DIR"
    mkdir -p "$DIR"/{munge,state,spool,log}
    chmod 700 "$DIR" "$DIR/munge"
    mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
    chmod 400 "$DIR/munge/munge.key"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start: $(tail -n 3 "$DIR/log/munged.log" 2>/dev/null | tr '\n' ' ')"
    read -r CTLD_PORT SLURMD_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
    MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$CONF" <<CONFEOF
# written by docs/slurm/local_cluster.sh
ClusterName=mpi-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
KillWait=30
MinJobAge=600
NodeName=$NODE NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONFEOF
    export SLURM_CONF="$CONF"
    slurmctld -f "$CONF" || die "slurmctld did not start: $(tail -n 5 "$DIR/log/slurmctld.log" | tr '\n' ' ')"
    slurmd -f "$CONF" -N "$NODE" || die "slurmd did not start: $(tail -n 5 "$DIR/log/slurmd.log" | tr '\n' ' ')"
    for _ in $(seq 1 240); do  # the node registers with slurmctld: IDLE
        state=$(scontrol show node "$NODE" 2>/dev/null | sed -n 's/.*State=\([A-Z+_]*\).*/\1/p' | head -n 1)
        if [ "$state" = IDLE ]; then
            say "up in $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")s: node $NODE ($CPUS CPUs," \
                "${MEM_MB} MB), partition debug; config $CONF"
            say "use it:  export SLURM_CONF=$CONF"
            return 0
        fi
        sleep 0.25
    done
    die "node $NODE not IDLE after 60 s (state '${state:-?}'): $(tail -n 3 "$DIR/log/slurmd.log" | tr '\n' ' ') $(tail -n 3 "$DIR/log/slurmctld.log" | tr '\n' ' ')"
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, then KILL after 20 s
    local f=$1 pid
    alive "$f" || return 0
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    say "$2 (pid $pid) still running after 20 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    [ -f "$CONF" ] || { say "no cluster in $DIR"; return 0; }
    export SLURM_CONF="$CONF"
    if alive "$DIR/slurmctld.pid"; then
        scancel --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 1 160); do  # running jobs get SIGTERM, then SIGKILL after KillWait
            [ -z "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
    stop_pid "$DIR/slurmd.pid" slurmd
    stop_pid "$DIR/slurmctld.pid" slurmctld
    stop_pid "$DIR/munge/munged.pid" munged
    say "stopped (state and logs kept in $DIR)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    status) export SLURM_CONF="$CONF"; sinfo; squeue ;;
    *) echo "usage: $0 start|stop|env|status   (state in \$MPI_SLURM_DIR, default /tmp/mpi-slurm)" >&2; exit 2 ;;
esac
