#!/usr/bin/env bash
# Runs an N-rank moecat job as N "hosts": one network namespace per rank, joined by veth pairs
# to a bridge, with optional netem delay and rate limit on every rank's link. Everything it
# creates is removed on exit (trap), and the whole run is bounded by a timeout.
#
#   scripts/netns/run.sh -n 2 [-d 5ms] [-r 1gbit] [-t 600] -- train --config configs/tiny.yaml --out runs/netns
#
# Needs root and iproute2. Rank r gets 10.77.0.(r+1); rank 0 is the master.
set -euo pipefail
N=2; DELAY=""; RATE=""; LIMIT=600; PORT=29517
while getopts "n:d:r:t:p:" o; do
  case $o in
    n) N=$OPTARG ;; d) DELAY=$OPTARG ;; r) RATE=$OPTARG ;; t) LIMIT=$OPTARG ;; p) PORT=$OPTARG ;;
    *) echo "usage: $0 -n N [-d delay] [-r rate] [-t seconds] [-p port] -- moecat args" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "give the moecat command after --" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLI="$ROOT/dist/cli/main.js"
TAG="mc$$"
BR="${TAG}br"
SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()

cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for ((r = 0; r < N; r++)); do ip netns del "${TAG}-$r" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ip link add "$BR" type bridge
ip link set "$BR" up
for ((r = 0; r < N; r++)); do
  ns="${TAG}-$r"
  ip netns add "$ns"
  ip link add "${TAG}v$r" type veth peer name "${TAG}p$r"
  ip link set "${TAG}v$r" netns "$ns"
  ip link set "${TAG}p$r" master "$BR"
  ip link set "${TAG}p$r" up
  ip -n "$ns" addr add "10.77.0.$((r + 1))/24" dev "${TAG}v$r"
  ip -n "$ns" link set "${TAG}v$r" up
  ip -n "$ns" link set lo up
  if [ -n "$DELAY$RATE" ]; then
    if ! ip netns exec "$ns" tc qdisc add dev "${TAG}v$r" root netem ${DELAY:+delay $DELAY} ${RATE:+rate $RATE} 2>/dev/null; then
      echo "netns: this kernel has no netem qdisc (sch_netem); run without -d/-r or load the module" >&2
      exit 2
    fi
  fi
done

status=0
for ((r = 0; r < N; r++)); do
  ip netns exec "${TAG}-$r" env RANK=$r WORLD_SIZE=$N MASTER_ADDR=10.77.0.1 MASTER_PORT=$PORT MOECAT_SECRET="$SECRET" \
    timeout "$LIMIT" node "$CLI" "$@" > >(sed "s/^/[host $r] /") 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
