#!/usr/bin/env bash
# `make check-fresh`: proves the README's quick start on a fresh Debian 12 machine.
# Builds a clean Debian 12 root (debootstrap, minbase), puts only git and a clone of the
# committed HEAD in it (and make, to type `make`), with ../shared beside it when this checkout has one, and runs the
# given make targets there as root (default: "build test"; FRESH_TARGETS="demo test" for
# the whole quick start). Every package the targets need must come from
# scripts/install-deps.sh inside that root: nothing of this machine leaks in.
# Needs root, debootstrap (installed if missing) and the Debian mirror. Takes 15-40 min.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
targets="${FRESH_TARGETS:-build test}"
[ "$(id -u)" -eq 0 ] || { echo "check-fresh: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }

mirror="$(grep -rhoE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian ' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 | tr -d ' ' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
root="$(mktemp -d /var/tmp/palm-fresh.XXXXXX)"
chmod 755 "$root"  # it becomes / : mktemp's 0700 would keep user nobody (the eval sandbox) out
mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -R -l "${mounts[i]}" 2>/dev/null || true; done
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT

echo "check-fresh: debootstrap bookworm (minbase) from $mirror into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# the same package sources as this machine (bookworm-updates, security), instead of debootstrap's
rm -f "$root/etc/apt/sources.list"
cp -a /etc/apt/sources.list.d/. "$root/etc/apt/sources.list.d/" 2>/dev/null || true
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

# the root a mount point of its own, as / is on a machine (ip netns and the eval
# sandbox remount / inside their namespaces)
mount --bind "$root" "$root"
mounts+=("$root")
for m in proc dev dev/pts; do
  mount --bind "/$m" "$root/$m"
  mounts+=("$root/$m")
done
# /sys with what is mounted below it (the cgroup hierarchies the eval sandbox caps with),
# as a machine's /sys has them
mount --rbind /sys "$root/sys"
mount --make-rslave "$root/sys"
mounts+=("$root/sys")
mount -t tmpfs tmpfs "$root/tmp"
mounts+=("$root/tmp")

# the machine's own CA certificates (e.g. a TLS-inspecting egress proxy, as in this
# workplace) belong to the machine, not to palm: carry them in so npm can reach its registry
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
chroot "$root" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git make ca-certificates >/dev/null"
mkdir -p "$root/work"
git clone -q "$repo" "$root/work/main"
if [ -d "$repo/../shared" ]; then
  mkdir -p "$root/work/shared"
  mount --bind -o ro "$repo/../shared" "$root/work/shared"
  mounts+=("$root/work/shared")
fi

echo "check-fresh: make $targets in the fresh root" >&2
start=$(date +%s)
for t in $targets; do
  chroot "$root" env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 CI="${CI:-}" bash -c "cd /work/main && make $t" || { echo "check-fresh: make $t FAILED in a fresh Debian 12 root" >&2; exit 1; }
done
echo "check-fresh: make $targets passed in a fresh Debian 12 root in $(( $(date +%s) - start )) s" >&2
