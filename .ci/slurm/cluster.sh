#!/usr/bin/env bash
# A single-node SLURM on this machine for the SLURM tests (no systemd needed; run as root).
#
#   .ci/slurm/cluster.sh start [--install]   write the config, start munged, slurmctld, slurmd; wait
#                                            until the node is idle (idempotent: running daemons stay)
#   .ci/slurm/cluster.sh stop                stop the daemons this script started (its PID files), only those
#   .ci/slurm/cluster.sh status              daemons alive? sinfo
#   .ci/slurm/cluster.sh env                 prints `export SLURM_CONF=…` (eval it to use sinfo, sbatch …)
#
# Everything lives in $LAUEFLOW_SLURM_DIR (default /tmp/laueflow-slurm): slurm.conf, gres.conf, the
# daemons' state, logs and PID files, and a private munge socket, so the machine's own /etc/slurm
# and /run/munge are never touched. Client commands find the config through SLURM_CONF (the
# laueflow tests set it from $LAUEFLOW_SLURM_DIR when it is unset).
# --install: `apt-get install -y slurmctld slurmd slurm-client munge` when a command is missing.
# Ports: $LAUEFLOW_SLURM_PORT (slurmctld, default 6817) and the next one (slurmd).
#
# Cluster: one node (this host; CPUs, sockets, cores from `slurmd -C`, RealMemory 90 % of what it
# reports) with a fake GPU (gres gpu:1 on /dev/null, for --gres=gpu:1 job directives), in two
# partitions: `debug` (default) and `gpu`.
set -euo pipefail

DIR=${LAUEFLOW_SLURM_DIR:-/tmp/laueflow-slurm}
PORT=${LAUEFLOW_SLURM_PORT:-6817}
CONF=$DIR/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket.2
export SLURM_CONF=$CONF

log() { echo "slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

# alive PID_FILE NAME: the PID recorded in PID_FILE runs the daemon NAME (not a recycled PID, not
# a zombie waiting to be reaped)
alive() {
    local pid stat
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $(<"/proc/$pid/comm") == "$2"* ]] || return 1
    [[ ${stat##*) } != Z* ]]
}

install_missing() {
    local missing=0
    for cmd in munged slurmctld slurmd sinfo sbatch; do
        command -v "$cmd" >/dev/null || missing=1
    done
    if ((missing)); then
        log "installing slurmctld slurmd slurm-client munge (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
    fi
}

check_commands() {
    for cmd in munged slurmctld slurmd sinfo sbatch; do
        command -v "$cmd" >/dev/null || die "$cmd not found: run '$0 start --install' (apt-get install slurmctld slurmd slurm-client munge)"
    done
    [[ $(id -u) == 0 ]] || die "run as root (the daemons of a one-node test cluster; no systemd needed)"
}

write_config() {
    local node memory host
    mkdir -p "$DIR"/{state,spool,log}
    host=$(hostname -s)
    node=$(slurmd -C | head -1)  # NodeName=… CPUs=… Boards=… SocketsPerBoard=… CoresPerSocket=… ThreadsPerCore=… RealMemory=…
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((memory * 9 / 10))/" <<<"$node")
    cat >"$CONF" <<EOF
# written by .ci/slurm/cluster.sh — a one-node test cluster
ClusterName=laueflow-ci
SlurmctldHost=$host
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
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
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
KillWait=5
InactiveLimit=0
MinJobAge=600
GresTypes=gpu
$node Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
# a partition without GPUs (a node that never registers) for the GPU-config checks
NodeName=nogpu NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + 2)) CPUs=1 RealMemory=100 State=FUTURE
PartitionName=cpu Nodes=nogpu MaxTime=INFINITE State=UP
EOF
    echo "Name=gpu File=/dev/null" >"$DIR/gres.conf"
}

start_munge() {
    alive "$DIR/munge/munged.pid" munged && return
    mkdir -p "$DIR/munge"
    chown munge:munge "$DIR/munge"
    chmod 0755 "$DIR/munge"  # slurm daemons and clients (any user) reach the socket
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start (see $DIR/munge/munged.log)"
    log "munged started (pid $(<"$DIR/munge/munged.pid"))"
}

start_slurm() {
    if ! alive "$DIR/slurmctld.pid" slurmctld; then
        slurmctld -f "$CONF" -c || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
        wait_for "$DIR/slurmctld.pid" slurmctld
        log "slurmctld started (pid $(<"$DIR/slurmctld.pid"))"
    fi
    if ! alive "$DIR/slurmd.pid" slurmd; then
        slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"
        wait_for "$DIR/slurmd.pid" slurmd
        log "slurmd started (pid $(<"$DIR/slurmd.pid"))"
    fi
}

wait_for() {  # PID_FILE NAME: up to 10 s for the daemon to write its PID file
    for _ in $(seq 100); do alive "$1" "$2" && return; sleep 0.1; done
    die "$2 did not write $1 (see $DIR/log/$2.log)"
}

wait_idle() {
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo -h -N -p debug -o %T 2>/dev/null | head -1 || true)
        [[ $state == idle* || $state == mixed* || $state == allocated* ]] && { log "node ready ($state); export SLURM_CONF=$CONF"; return; }
        [[ $state == down* || $state == drain* ]] && scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        sleep 0.5
    done
    die "the node is not idle after 60 s (state: '${state:-no answer}'; see $DIR/log/)"
}

stop_one() {  # PID_FILE NAME
    local pid
    alive "$1" "$2" || { rm -f "$1"; return; }
    pid=$(<"$1")
    kill -TERM "$pid"
    for _ in $(seq 100); do alive "$1" "$2" || break; sleep 0.1; done
    alive "$1" "$2" && kill -KILL "$pid"
    rm -f "$1"
    log "$2 stopped (pid $pid)"
}

job_processes() {  # PIDs of processes left by jobs of this cluster (their environment names its config)
    local env pid
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}
        pid=${pid%/environ}
        [[ $pid == "$$" ]] && continue
        { tr '\0' '\n' <"$env" | grep -qx "SLURM_CONF=$CONF" && tr '\0' '\n' <"$env" | grep -q '^SLURM_JOB_ID='; } \
            2>/dev/null && echo "$pid"
    done
    return 0
}

reap_job_processes() {
    # a process of an ended job that left the job's process tree (proctrack/linuxproc follows
    # parents; e.g. a Dask worker retired by --lifetime whose job SLURM had already ended)
    local pids n
    pids=$(job_processes)
    [[ -z $pids ]] && return
    n=$(echo $pids | wc -w)
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 50); do [[ -z $(job_processes) ]] && break; sleep 0.2; done
    pids=$(job_processes)
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
    log "stopped $n process(es) left by ended jobs"
}

case "${1:-}" in
    start)
        [[ ${2:-} == --install ]] && install_missing
        check_commands
        if ! alive "$DIR/slurmctld.pid" slurmctld && ! alive "$DIR/slurmd.pid" slurmd; then
            write_config
        fi
        start_munge
        start_slurm
        wait_idle
        ;;
    stop)
        # cancel the jobs still on this cluster first: stopping slurmd alone leaves their processes
        # (e.g. Dask workers) running as orphans
        if alive "$DIR/slurmctld.pid" slurmctld; then
            jobs=$(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null || true)
            if [[ -n $jobs ]]; then
                SLURM_CONF=$CONF scancel $jobs 2>/dev/null || true
                for _ in $(seq 50); do [[ -z $(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.2; done
                log "cancelled job(s) $(echo $jobs)"
            fi
        fi
        stop_one "$DIR/slurmd.pid" slurmd
        reap_job_processes
        stop_one "$DIR/slurmctld.pid" slurmctld
        stop_one "$DIR/munge/munged.pid" munged
        ;;
    status)
        for d in munge/munged slurmctld slurmd; do
            if alive "$DIR/$d.pid" "${d#munge/}"; then echo "${d#munge/}: running (pid $(<"$DIR/$d.pid"))"; else echo "${d#munge/}: stopped"; fi
        done
        sinfo 2>/dev/null || true
        ;;
    env)
        echo "export SLURM_CONF=$CONF"
        ;;
    *)
        echo "usage: $0 start [--install] | stop | status | env" >&2
        exit 2
        ;;
esac
