#!/usr/bin/env bash
# Installs, with apt-get, every Debian 12 package that escdr needs to build, test
# and run its demo, and only those that are missing. Safe to run again.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config
  # libraries
  libxxhash-dev libcli11-dev nlohmann-json3-dev libfmt-dev libspdlog-dev
  libsqlite3-dev libpq-dev libpqxx-dev libssl-dev libzstd-dev liblz4-dev libsimgrid-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # test guests and services
  qemu-system-x86 linux-image-amd64 busybox-static cpio socat
  # real distribution guests (tools/build-distro-guest.sh) and their hardware
  qemu-utils ovmf mmdebstrap dosfstools mtools fdisk e2fsprogs psmisc
  postgresql postgresql-client
  # libvirt hosts (src/libvirt/, testing/libvirt_hosts.h)
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev libxml2-dev
  # reports
  gnuplot-nox
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
else
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's libvirtd refuses to start its QEMU driver without the libvirt-qemu
# user, which only libvirt-daemon-system (with systemd units) creates; the
# libvirt hosts of the tests run QEMU as root but need the user to exist.
if ! getent group libvirt-qemu >/dev/null; then
  $SUDO groupadd --system libvirt-qemu
fi
if ! getent passwd libvirt-qemu >/dev/null; then
  echo "bootstrap: adding the system user libvirt-qemu"
  $SUDO useradd --system --gid libvirt-qemu --no-create-home --home-dir /var/lib/libvirt \
    --shell /usr/sbin/nologin libvirt-qemu
fi
