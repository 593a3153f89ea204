#!/usr/bin/env bash
# Two "hosts": network namespaces joined by a veth pair, one rank in each, so the
# data-parallel run really crosses a network interface (OpenMPI's TCP transport over the
# veth; mpirun starts the remote rank through an agent that enters the other namespace).
# Checks: the run equals one process within the DP tolerance, and the gradients crossed
# the interface (its byte counters). Needs root (namespaces); exit 77 otherwise.
set -euo pipefail
palm="$1"
text="$2"  # some text to train on
[ "$(id -u)" -eq 0 ] || { echo "dist_netns: needs root to create network namespaces"; exit 77; }
work="$(mktemp -d /tmp/palm_netns.XXXXXX)"
a="palm_a_$$"
b="palm_b_$$"
cleanup() {
  ip netns del "$a" 2>/dev/null || true
  ip netns del "$b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "$0")/test_hosts.sh"
two_hosts "$a" "$b" "va$$" "vb$$" 10.77.0

cat > "$work/agent.sh" <<AGENT
#!/bin/sh
host="\$1"; shift
case "\$host" in
  10.77.0.1) ns=$a ;;
  10.77.0.2) ns=$b ;;
  *) echo "netns agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
chmod +x "$work/agent.sh"

"$palm" tokenizer train --input "$text" --vocab-size 500 --out "$work/tok" 2>/dev/null
"$palm" data build --tokenizer "$work/tok" --source "text=$text:format=lines" --out "$work/data" 2>/dev/null
args=(train --preset tiny --data "$work/data" --batch-size 8 --seq-len 64 --steps 10 --checkpoint-every 10 --eval-every 100 --no-card --threads 1)
"$palm" "${args[@]}" --out "$work/one" >/dev/null 2>&1

tx_before=$(ip netns exec "$a" cat "/sys/class/net/va$$/statistics/tx_bytes")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ip netns exec "$a" timeout 300 mpirun -np 2 --host 10.77.0.1:1,10.77.0.2:1 \
  --mca plm_rsh_agent "$work/agent.sh" --mca btl self,tcp \
  --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
  -x OMP_NUM_THREADS=1 "$palm" "${args[@]}" --out "$work/two" --hash-every 1 > "$work/two.log" 2>&1 \
  || { cat "$work/two.log"; echo "dist_netns: the two-namespace run failed"; exit 1; }
tx_after=$(ip netns exec "$a" cat "/sys/class/net/va$$/statistics/tx_bytes")
grep -q "rank 1/2" "$work/two.log"

/usr/bin/python3 - "$work" $((tx_after - tx_before)) <<'PY'
import json, sys
work, crossed = sys.argv[1], int(sys.argv[2])
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{work}/{run}/metrics.jsonl") if '"loss"' in l]
one, two = losses("one"), losses("two")
assert len(one) == len(two) == 10, (len(one), len(two))
worst = max(abs(a - b) / a for a, b in zip(one, two))
# 10 steps of the tiny model: 157,376 gradients of 4 bytes all-reduced every step; any
# all-reduce of 2 ranks sends at least half of them each way
assert crossed > 10 * 157376 * 4 // 2, f"only {crossed} bytes crossed the veth"
assert worst < 1e-6, f"two namespaces differ from one process by {worst} (relative loss)"
print(f"dist_netns: 2 ranks in 2 network namespaces: loss within {worst:.2e} of one process; {crossed} bytes crossed the veth")
PY
