#!/usr/bin/env bash
# Installs what the local cluster's real node needs from Debian's packages: containerd and
# runc (the container runtime), the CNI plugins (bridge, host-local, portmap, loopback),
# iptables (kube-proxy and the bridge's masquerade), a static busybox (the test workloads'
# image), s3fs and FUSE (the S3 CSI plugin's mounter), gcc (the pause image), debootstrap
# (the Python base image), pip (the notebook image's wheels). Idempotent;
# needs root. Prints nothing when everything is there.
set -euo pipefail

declare -A want=(
  [/usr/bin/containerd]=containerd
  [/usr/sbin/runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/sbin/iptables]=iptables
  [/bin/busybox]=busybox-static
  [/usr/bin/s3fs]=s3fs
  [/usr/bin/fusermount3]=fuse3
  [/usr/bin/gcc]=gcc
  [/usr/sbin/debootstrap]=debootstrap
  [/usr/bin/nsenter]=util-linux
)
need=()
for path in "${!want[@]}"; do
  [[ -e "$path" ]] || need+=("${want[$path]}")
done
# pip, which fetches the notebook image's Jupyter wheels: Debian's when this Python has none.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "the real node needs ${need[*]} (Debian packages) and root to install them" >&2
    exit 1
  fi
  echo "installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
