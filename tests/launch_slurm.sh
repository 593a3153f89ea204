#!/usr/bin/env bash
# palm launch under a real Slurm: a one-node cluster (munged, slurmctld, slurmd on private
# ports, sockets and state in a temporary directory) that this test starts and stops.
# Inside an allocation (salloc) palm launch runs its ranks with srun; a worker killed with
# SIGKILL mid-run is healed from the last checkpoint and the run ends bitwise equal to an
# uninterrupted one under the same launcher. Needs root (the daemons run as root here)
# and Debian's slurm-wlm and munge (scripts/install-deps.sh); exit 77 otherwise.
set -euo pipefail
palm="$1"
text="$2"
[ "$(id -u)" -eq 0 ] || { echo "launch_slurm: needs root to run a Slurm cluster"; exit 77; }
for c in munged slurmctld slurmd salloc srun sinfo; do
  command -v "$c" >/dev/null || {
    echo "launch_slurm: $c is missing (scripts/install-deps.sh installs slurm-wlm and munge)"
    [ "${CI:-}" = true ] && exit 1  # CI installs them: a skip there would hide a broken install
    exit 77
  }
done
source "$(dirname "$0")/test_hosts.sh"
work="$(mktemp -d /tmp/palm_slurm.XXXXXX)"
chmod 755 "$work"
stop_daemons() {
  for d in slurmd slurmctld munged; do
    [ -f "$work/$d.pid" ] && kill "$(cat "$work/$d.pid")" 2>/dev/null || true
  done
  sleep 0.5
}
cleanup() {
  stop_daemons
  pgrep -f "$work/run" | xargs -r kill -9 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/state" "$work/spool"
dd if=/dev/urandom of="$work/munge.key" bs=1 count=1024 2>/dev/null
chmod 400 "$work/munge.key"
munged -f --socket="$work/munge.sock" --key-file="$work/munge.key" --log-file="$work/munged.log" \
  --pid-file="$work/munged.pid" --seed-file="$work/munged.seed"
host="$(hostname -s)"
# two free ports for slurmctld and slurmd
read -r p1 p2 < <(/usr/bin/python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
cat > "$work/slurm.conf" <<CONF
ClusterName=palmtest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge.sock
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldPort=$p1
SlurmdPort=$p2
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
MpiDefault=pmix
ReturnToService=2
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$work/slurm.conf"
slurmctld
slurmd
for _ in $(seq 100); do
  sinfo -h -o %T 2>/dev/null | grep -q idle && break
  sleep 0.2
done
sinfo -h -o %T | grep -q idle || { cat "$work/slurmctld.log" "$work/slurmd.log"; echo "launch_slurm: the cluster did not come up"; exit 1; }

"$palm" tokenizer train --input "$text" --vocab-size 500 --out "$work/tok" >/dev/null 2>&1
"$palm" data build --tokenizer "$work/tok" --source "text=$text:format=lines" --out "$work/data" >/dev/null 2>&1
args=(train --preset tiny --data "$work/data" --batch-size 8 --seq-len 64 --steps 400 --checkpoint-every 50
      --eval-every 100000 --threads 1 --no-card)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
timeout 300 salloc -n 2 "$palm" launch --out "$work/run/reference" --np 2 -- "${args[@]}" > "$work/reference.log" 2>&1 \
  || { cat "$work/reference.log"; echo "launch_slurm: the uninterrupted run failed"; exit 1; }
timeout 300 salloc -n 2 "$palm" launch --out "$work/run/healed" --np 2 -- "${args[@]}" > "$work/healed.log" 2>&1 &
launch=$!
beat="$work/run/healed/launch/heartbeats/rank-1.json"
step=$(wait_for_step "$beat" 120)
[ "$step" -ge 120 ] || { cat "$work/healed.log"; echo "launch_slurm: rank 1 never reached step 120"; exit 1; }
kill -9 "$(heartbeat_field "$beat" pid)"
status=0
wait "$launch" || status=$?
[ "$status" -eq 0 ] || { cat "$work/healed.log"; echo "launch_slurm: palm launch exited $status"; exit 1; }
left=$(pgrep -f "$work/run" | wc -l || true)
[ "$left" -eq 0 ] || { pgrep -af "$work/run"; echo "launch_slurm: processes left"; exit 1; }
cmp "$work/run/reference/checkpoints/step-400/model.safetensors" "$work/run/healed/checkpoints/step-400/model.safetensors" \
  || { echo "launch_slurm: the healed run differs from the uninterrupted one"; exit 1; }
/usr/bin/python3 - "$work/run/healed" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(f"{sys.argv[1]}/events.jsonl")]
names = [e["event"] for e in ev]
assert all(e["launcher"] == "srun" for e in ev if e["event"] == "layout"), ev
fails = [e for e in ev if e["event"] == "failure"]
assert len(fails) == 1 and fails[0]["rank"] == 1, fails
assert names.count("restart") == 1 and names[-1] == "finish", names
print(f"launch_slurm: under srun, rank 1 killed ({fails[0]['cause']}: {fails[0]['detail']}), healed, bitwise equal to the uninterrupted run")
PY
