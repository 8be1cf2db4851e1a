#!/usr/bin/env bash
# A two-node Slurm cluster on one machine, for tests and for trying the sbatch file by hand:
# slurmctld in network namespace <tag>-ctl (which also holds the bridge, 10.78.0.254) and one
# slurmd per node in namespaces <tag>-node1 / <tag>-node2 (10.78.0.1 / 10.78.0.2, started with
# `slurmd -N nodeK`), all authenticated by one munged whose key and socket live in the cluster
# directory. The root namespace gets no address, route or listening port: clients (sbatch,
# scontrol, squeue) run in the controller's namespace through `ctl`. Node names resolve through
# DIR/hosts, bind-mounted over /etc/hosts in a private mount namespace of each daemon (the
# host's /etc/hosts is untouched; /sys stays the host's, so slurmd finds its cgroup mounts).
#
#   test-cluster.sh run [-t SECONDS] -- COMMAND...   up, COMMAND on the controller, down (trap)
#   test-cluster.sh up DIR [SECONDS]                 start in the empty directory DIR; a watchdog
#                                                    tears it down after SECONDS (default 600)
#   test-cluster.sh ctl DIR COMMAND...               run COMMAND in the controller's namespace
#   test-cluster.sh exec DIR K COMMAND...            run COMMAND on node K (outside Slurm)
#   test-cluster.sh kill-node DIR K                  lose node K: SIGKILL everything in its namespace
#   test-cluster.sh start-node DIR K                 start node K's slurmd again
#   test-cluster.sh down DIR                         stop everything, delete namespaces and DIR
#
# COMMAND sees SLURM_CONF, so `sbatch`, `scontrol`, `squeue`, `sinfo` talk to this cluster.
# Needs root, iproute2, slurm-wlm (slurmctld, slurmd, client commands) and munge.
set -euo pipefail
NODES=2
SUBNET=10.78.0

die() { echo "error: test-cluster.sh: $*" >&2; exit 2; }

need() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, slurmd) (run it with sudo)"
  local t
  for t in ip slurmctld slurmd munged sbatch scontrol; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (apt-get install slurm-wlm munge iproute2)"
  done
}

# Reads the tag written by `up`; refuses a directory that holds no cluster.
load() {
  DIR=$(cd "$1" 2>/dev/null && pwd) || die "$1: no such cluster directory (start one with: test-cluster.sh up DIR)"
  [ -f "$DIR/tag" ] || die "$DIR: not a cluster directory (no tag file; start one with: test-cluster.sh up DIR)"
  TAG=$(cat "$DIR/tag")
  export SLURM_CONF="$DIR/slurm.conf"
}

ns_of() { if [ "$1" = ctl ]; then echo "$TAG-ctl"; else echo "$TAG-node$1"; fi; }

# Runs a command in the network namespace of `ctl` or node K, with DIR/hosts as /etc/hosts.
in_ns() {
  local ns
  ns=$(ns_of "$1"); shift
  nsenter --net="/run/netns/$ns" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$DIR/hosts" "$@"
}

# The same, replacing this shell (for commands whose caller waits on or kills them).
exec_ns() {
  local ns
  ns=$(ns_of "$1"); shift
  exec nsenter --net="/run/netns/$ns" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$DIR/hosts" "$@"
}

# Kills every process in a namespace, then the namespace itself.
drop_ns() {
  local ns=$1 p
  if ip netns list 2>/dev/null | grep -w "^$ns" >/dev/null; then
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  fi
}

down() {
  load "$1"
  local k p
  # The watchdog first (its whole process group, sleep included), unless this is the watchdog.
  if [ -f "$DIR/watchdog.pid" ]; then
    p=$(cat "$DIR/watchdog.pid")
    [ "$p" = "$$" ] || kill -- "-$p" 2>/dev/null || true
  fi
  for ((k = NODES; k >= 1; k--)); do drop_ns "$(ns_of "$k")"; done
  drop_ns "$(ns_of ctl)"
  if [ -f "$DIR/munged.pid" ]; then
    p=$(cat "$DIR/munged.pid")
    kill "$p" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do grep -qs '^State:[[:space:]]*[^Z[:space:]]' "/proc/$p/status" || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}

start_node() {
  local k=$1
  mkdir -p "$DIR/spool-node$k"
  in_ns "$k" slurmd -f "$DIR/slurm.conf" -N "node$k" \
    || die "node$k: slurmd did not start (see $DIR/slurmd-node$k.log)"
}

wait_idle() {
  local want=$1 end=$((SECONDS + 30)) n
  while ((SECONDS < end)); do
    n=$(in_ns ctl sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l || true)
    [ "$n" -ge "$want" ] && return 0
    sleep 0.3
  done
  die "the nodes did not come up idle in 30 s (see $DIR/*.log)"
}

write_conf() {
  local k
  cat >"$DIR/slurm.conf" <<EOF
# Written by scripts/cluster/test-cluster.sh: a throwaway two-node cluster.
ClusterName=$TAG
SlurmctldHost=$(hostname -s)($SUBNET.254)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.sock,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/plugstack.conf
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/linear
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerParameters=sched_interval=2,bf_interval=1
SlurmdTimeout=3
MessageTimeout=5
KillWait=2
InactiveLimit=0
MinJobAge=600
NodeName=DEFAULT CPUs=1 RealMemory=1 State=UNKNOWN
EOF
  for ((k = 1; k <= NODES; k++)); do
    echo "NodeName=node$k NodeAddr=$SUBNET.$k NodeHostname=node$k" >>"$DIR/slurm.conf"
  done
  echo "PartitionName=test Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP" >>"$DIR/slurm.conf"
  : >"$DIR/plugstack.conf"
}

up() {
  need
  [ -d "$1" ] || die "$1: no such directory (make an empty one)"
  DIR=$(cd "$1" && pwd)
  [ -z "$(ls -A "$DIR")" ] || die "$DIR: not empty (give an empty directory)"
  local limit=${2:-600} k ns
  [[ "$limit" =~ ^[0-9]+$ ]] || die "SECONDS=$limit is not a whole number of seconds"
  TAG="mcs$$"
  echo "$TAG" >"$DIR/tag"
  export SLURM_CONF="$DIR/slurm.conf"
  # Whatever fails from here on (die, set -e, a signal) leaves nothing behind.
  trap 'exit 130' INT TERM
  trap 'down "$DIR" >/dev/null 2>&1 || true' EXIT
  # The watchdog bounds the cluster's lifetime even if the caller dies without calling down.
  setsid bash -c 'sleep "$1"; exec "$2" down "$3"' watchdog "$limit" "$(readlink -f "$0")" "$DIR" \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$DIR/watchdog.pid"

  mkdir -p "$DIR/state"
  dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none
  chmod 400 "$DIR/munge.key"
  munged --force --socket="$DIR/munge.sock" --key-file="$DIR/munge.key" --pid-file="$DIR/munged.pid" \
    --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed" || die "munged did not start (see $DIR/munged.log)"
  write_conf

  printf '127.0.0.1 localhost\n%s %s\n' "$SUBNET.254" "$(hostname -s)" >"$DIR/hosts"
  for ((k = 1; k <= NODES; k++)); do echo "$SUBNET.$k node$k" >>"$DIR/hosts"; done
  ns=$(ns_of ctl)
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add br0 type bridge
  ip -n "$ns" addr add "$SUBNET.254/24" dev br0
  ip -n "$ns" link set br0 up
  for ((k = 1; k <= NODES; k++)); do
    ns=$(ns_of "$k")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "${TAG}v$k" netns "$ns" type veth peer name "p$k" netns "$(ns_of ctl)"
    ip -n "$ns" link set "${TAG}v$k" name eth0
    ip -n "$ns" addr add "$SUBNET.$k/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$(ns_of ctl)" link set "p$k" master br0
    ip -n "$(ns_of ctl)" link set "p$k" up
  done

  in_ns ctl slurmctld -f "$DIR/slurm.conf" -i \
    || die "slurmctld did not start (see $DIR/slurmctld.log)"
  for ((k = 1; k <= NODES; k++)); do start_node "$k"; done
  wait_idle "$NODES"
  trap - EXIT INT TERM
  echo "cluster $TAG up in $DIR: node[1-$NODES] idle; SLURM_CONF=$DIR/slurm.conf"
}

run() {
  local limit=600
  while getopts "t:" o; do
    case $o in
      t) limit=$OPTARG ;;
      *) die "usage: test-cluster.sh run [-t SECONDS] -- COMMAND..." ;;
    esac
  done
  shift $((OPTIND - 1))
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "give the command to run on the controller after -- (e.g. bash)"
  need
  # Global: the EXIT trap runs after this function has returned.
  RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/moecat-slurm-XXXXXX")
  up "$RUN_DIR" $((limit + 30))
  trap 'exit 130' INT TERM
  trap 'down "$RUN_DIR" >/dev/null 2>&1 || rm -rf "$RUN_DIR"' EXIT
  load "$RUN_DIR"
  in_ns ctl timeout --foreground "$limit" "$@"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  run) run "$@" ;;
  up) [ $# -ge 1 ] || die "usage: test-cluster.sh up DIR [SECONDS]"; up "$@" ;;
  down) [ $# -eq 1 ] || die "usage: test-cluster.sh down DIR"; down "$1" ;;
  ctl)
    [ $# -ge 2 ] || die "usage: test-cluster.sh ctl DIR COMMAND..."
    load "$1"; shift
    exec_ns ctl "$@" ;;
  exec)
    [ $# -ge 3 ] || die "usage: test-cluster.sh exec DIR K COMMAND..."
    load "$1"
    [[ "$2" =~ ^[1-9]$ ]] && [ "$2" -le "$NODES" ] || die "node $2: no such node (1..$NODES)"
    k=$2; shift 2
    exec_ns "$k" "$@" ;;
  kill-node)
    [ $# -eq 2 ] || die "usage: test-cluster.sh kill-node DIR K"
    load "$1"
    [[ "$2" =~ ^[1-9]$ ]] && [ "$2" -le "$NODES" ] || die "node $2: no such node (1..$NODES)"
    for p in $(ip netns pids "$(ns_of "$2")"); do kill -9 "$p" 2>/dev/null || true; done ;;
  start-node)
    [ $# -eq 2 ] || die "usage: test-cluster.sh start-node DIR K"
    load "$1"
    [[ "$2" =~ ^[1-9]$ ]] && [ "$2" -le "$NODES" ] || die "node $2: no such node (1..$NODES)"
    start_node "$2" ;;
  *) die "usage: test-cluster.sh run|up|ctl|exec|kill-node|start-node|down ... (see the comment at the top)" ;;
esac
