#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (Debian's slurmctld, slurmd, slurm-client and munge,
# run as root without systemd or cgroups), for tests/slurm.rs and for trying `expanse slurm`.
#
#   bash tools/slurm_local.sh start DIR    # config, state and logs in DIR; waits until the node is idle
#   export SLURM_CONF=DIR/slurm.conf       # then sbatch, squeue, sinfo, scancel talk to it
#   bash tools/slurm_local.sh stop DIR
#
# Install the packages first: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
# (.ci/run does). Exits non-zero with the reason (and the daemons' logs) when the cluster does not start.
set -euo pipefail
cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf

stop() {
    for pid in "$dir/ctld.pid" "$dir/d.pid"; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    if [ -f "$dir/munged.ours" ] && [ -f /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        rm -f "$dir/munged.ours"
    fi
    # slurmctld and slurmd take a moment to go; wait so that a new cluster can take the ports.
    for _ in $(seq 1 50); do
        alive=0
        for pid in "$dir/ctld.pid" "$dir/d.pid"; do
            [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.2
    done
}

fail() {
    echo "slurm_local: $1" >&2
    for log in "$dir/log/ctld.log" "$dir/log/d.log"; do
        [ -f "$log" ] && { echo "--- $log (last lines)" >&2; tail -n 20 "$log" >&2; }
    done
    stop
    exit 1
}

case $cmd in
start)
    for bin in slurmctld slurmd sbatch sinfo munged; do
        command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || fail "$bin not found: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
    done
    [ "$(id -u)" = 0 ] || fail "this one-node cluster runs its daemons as root; run as root"
    stop
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    host=$(hostname)
    # The node offers 90 % of this machine's memory (slurmd drains a node configured with more
    # than it finds).
    memory=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
    cat > "$conf" <<EOF
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/ctld.pid
SlurmdPidFile=$dir/d.pid
SlurmctldLogFile=$dir/log/ctld.log
SlurmdLogFile=$dir/log/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [ ! -f /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! { [ -f /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; }; then
        su -s /bin/sh munge -c /usr/sbin/munged || fail "munged did not start"
        touch "$dir/munged.ours"
    fi
    /usr/sbin/slurmctld -f "$conf" || fail "slurmctld did not start"
    /usr/sbin/slurmd -f "$conf" || fail "slurmd did not start"
    export SLURM_CONF=$conf
    for _ in $(seq 1 60); do
        if sinfo -h -o %t 2>/dev/null | grep -q idle; then
            echo "export SLURM_CONF=$conf"
            exit 0
        fi
        sleep 0.5
    done
    fail "the node did not become idle within 30 s (sinfo: $(sinfo -h 2>&1 | head -n 3))"
    ;;
stop)
    stop
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
