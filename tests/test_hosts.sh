# Helpers for the multi-"host" shell tests (sourced): two network namespaces joined by a
# veth pair, and waiting on a palm launch heartbeat.

# two_hosts NS_A NS_B IF_A IF_B PREFIX: namespaces NS_A (PREFIX.1) and NS_B (PREFIX.2),
# joined by the veth pair IF_A / IF_B on PREFIX.0/24, loopback up in both.
two_hosts() {
  local a="$1" b="$2" ia="$3" ib="$4" net="$5"
  ip netns add "$a"
  ip netns add "$b"
  ip link add "$ia" type veth peer name "$ib"
  ip link set "$ia" netns "$a"
  ip link set "$ib" netns "$b"
  ip -n "$a" addr add "$net.1/24" dev "$ia"
  ip -n "$b" addr add "$net.2/24" dev "$ib"
  for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
  ip -n "$a" link set "$ia" up
  ip -n "$b" link set "$ib" up
}

# heartbeat_field FILE KEY: a field of a rank's heartbeat (0 while there is none).
heartbeat_field() {
  /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2" 2>/dev/null || echo 0
}

# wait_for_step FILE STEP: waits up to 60 s until the heartbeat reports STEP or later;
# prints the step reached.
wait_for_step() {
  local step=0
  for _ in $(seq 600); do
    step=$(heartbeat_field "$1" step)
    [ "$step" -ge "$2" ] && break
    sleep 0.1
  done
  echo "$step"
}
