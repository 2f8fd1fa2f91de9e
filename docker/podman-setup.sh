#!/usr/bin/env bash
# Prepare a Debian machine with no Docker engine and no reachable container
# registry to build and run the mockflock image with podman.
#
# Steps, each skipped when already done, so the script is safe to rerun:
#   1. install podman, runc, slirp4netns, uidmap and debootstrap with apt;
#   2. write /etc/containers/containers.conf for this kind of machine;
#   3. build the base image BASE_IMAGE from Debian bookworm with debootstrap
#      and import it, because no registry can be reached to pull one.
#
# Needs root. Environment:
#   BASE_IMAGE     image name to create (default localhost/python-base:bookworm)
#   DEBIAN_MIRROR  mirror for debootstrap (default http://deb.debian.org/debian)
#   FORCE_CONFIG=1 rewrite containers.conf even if it already exists
#
# The base image's Python is Debian's 3.11. Build with
#   podman build --format docker --network=host \
#       --build-arg BASE_IMAGE=localhost/python-base:bookworm -f docker/Dockerfile .
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/python-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CONF=/etc/containers/containers.conf

log() { printf 'podman-setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get, debootstrap and chroot need it)"
    exit 1
fi

# 1. Packages ----------------------------------------------------------------
packages=(podman runc slirp4netns uidmap debootstrap)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "packages already installed"
fi

# 2. containers.conf -----------------------------------------------------------
# runc, because crun 1.8 (bookworm) fails on some cgroup layouts. cgroupfs and a
# file event log, because there may be no systemd. Podman's default ulimits can
# exceed the machine's hard limits, and then every container fails to start, so
# the limits are set to the hard limits, capped at 1048576 files and 32768 processes.
if [ ! -f "$CONF" ] || [ "${FORCE_CONFIG:-0}" = 1 ]; then
    nofile=$(ulimit -Hn)
    if [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; then
        nofile=1048576
    fi
    nproc=$(ulimit -Hu)
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then
        nproc=32768
    fi
    log "writing $CONF (nofile=$nofile, nproc=$nproc)"
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF" <<EOF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
else
    log "$CONF already exists; set FORCE_CONFIG=1 to rewrite it"
fi

# 3. Base image ----------------------------------------------------------------
if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE already exists"
    exit 0
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
rootfs=$workdir/rootfs

log "building $BASE_IMAGE with debootstrap from $DEBIAN_MIRROR"
if ! debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$workdir/debootstrap.log" 2>&1; then
    log "debootstrap failed. Last lines of its log:"
    tail -n 30 "$workdir/debootstrap.log" >&2
    exit 1
fi

# A network whose proxy re-signs TLS needs the host's extra CA certificates
# inside the image too, or pip fails during the image build.
shopt -s nullglob
extra_certs=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
if [ "${#extra_certs[@]}" -gt 0 ]; then
    cp "${extra_certs[@]}" "$rootfs/usr/local/share/ca-certificates/"
fi
chroot "$rootfs" update-ca-certificates >/dev/null
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*

log "importing $BASE_IMAGE"
tar -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$BASE_IMAGE" >/dev/null
log "done"
