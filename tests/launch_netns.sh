#!/usr/bin/env bash
# palm launch over two "hosts": network namespaces joined by a veth pair, one rank in
# each (mpirun reaches the other namespace through an agent, as it would through ssh).
# Mid-run host b disappears: its processes are killed and from then on the agent cannot
# reach it (as ssh to a dead host). The controller must heal the job on host a alone
# (--min-np 1), say so in events.jsonl, and leave no process behind in either namespace.
# Needs root (namespaces); exit 77 otherwise.
set -euo pipefail
palm="$1"
text="$2"
[ "$(id -u)" -eq 0 ] || { echo "launch_netns: needs root to create network namespaces"; exit 77; }
work="$(mktemp -d /tmp/palm_launch_netns.XXXXXX)"
a="palm_la_$$"
b="palm_lb_$$"
cleanup() {
  for ns in "$a" "$b"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "$0")/test_hosts.sh"
two_hosts "$a" "$b" "la$$" "lb$$" 10.78.0

cat > "$work/agent.sh" <<AGENT
#!/bin/sh
host="\$1"; shift
case "\$host" in
  10.78.0.1) ns=$a ;;
  10.78.0.2) ns=$b
    if [ -e "$work/b_gone" ]; then echo "ssh: connect to host 10.78.0.2 port 22: No route to host" >&2; exit 255; fi ;;
  *) echo "netns agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
chmod +x "$work/agent.sh"
printf '10.78.0.1 slots=1\n10.78.0.2 slots=1\n' > "$work/hosts"

"$palm" tokenizer train --input "$text" --vocab-size 500 --out "$work/tok" >/dev/null 2>&1
"$palm" data build --tokenizer "$work/tok" --source "text=$text:format=lines" --out "$work/data" >/dev/null 2>&1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run="$work/run"
ip netns exec "$a" timeout 300 "$palm" launch --out "$run" --np 2 --min-np 1 --hostfile "$work/hosts" \
  --hang-timeout 10 --max-restarts 3 \
  --launcher-args="--mca plm_rsh_agent $work/agent.sh --mca btl self,tcp --mca btl_tcp_if_include 10.78.0.0/24 --mca oob_tcp_if_include 10.78.0.0/24 -x OMP_NUM_THREADS=1" \
  -- train --preset tiny --data "$work/data" --batch-size 8 --seq-len 64 --steps 400 --checkpoint-every 50 \
  --eval-every 100000 --threads 1 --no-card > "$work/launch.log" 2>&1 &
launch=$!
beat="$run/launch/heartbeats/rank-1.json"
step=$(wait_for_step "$beat" 120)
[ "$step" -ge 120 ] || { cat "$work/launch.log"; echo "launch_netns: rank 1 never reached step 120"; exit 1; }
touch "$work/b_gone"
ip netns pids "$b" | xargs -r kill -9   # host b is gone: every process on it
status=0
wait "$launch" || status=$?
[ "$status" -eq 0 ] || { cat "$work/launch.log"; echo "launch_netns: palm launch exited $status"; exit 1; }
left_a=$(ip netns pids "$a" | wc -l)
left_b=$(ip netns pids "$b" | wc -l)
[ "$left_a" -eq 0 ] && [ "$left_b" -eq 0 ] || { ps -ef | grep "$work" | grep -v grep; echo "launch_netns: processes left"; exit 1; }
/usr/bin/python3 - "$run" <<'PY'
import json, sys
run = sys.argv[1]
ev = [json.loads(l) for l in open(f"{run}/events.jsonl")]
names = [e["event"] for e in ev]
shrink = [e for e in ev if e["event"] == "shrink"]
assert len(shrink) == 1, names
assert shrink[0]["dropped_hosts"] == ["10.78.0.2"] and shrink[0]["to_np"] == 1, shrink
assert names[-1] == "finish", names
layouts = [e for e in ev if e["event"] == "layout"]
assert layouts[-1]["np"] == 1 and [h["host"] for h in layouts[-1]["hosts"]] == ["10.78.0.1"], layouts[-1]
fails = [e for e in ev if e["event"] == "failure"]
losses = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if '"loss"' in l]
assert max(l["step"] for l in losses) == 400
print(f"launch_netns: host b lost at step >= 120; {len(fails)} failed attempts "
      f"({', '.join(f['cause'] for f in fails)}), then 400 steps on host a alone")
PY
