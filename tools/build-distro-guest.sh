#!/usr/bin/env bash
# Builds a real Debian guest disk image for escdr's tests and benchmarks
# (docs/distro-guests.md).
#
#   tools/build-distro-guest.sh debian-12|debian-13 [OUTDIR]   (default OUTDIR: /var/lib/escdr/guests)
#
# Output in OUTDIR/<name>/:
#   disk.img     raw, sparse, 2 GiB, GPT: partition 1 = EFI system partition (FAT32,
#                100 MiB, systemd-boot, kernel and initrd), partition 2 = ext4 root
#                (label escdr-root), seen by the guest as /dev/vda2 on virtio-blk
#   vmlinuz, initrd.img, cmdline   the image's own kernel and initramfs and the
#                kernel command line, for direct kernel boot (-kernel/-initrd/-append)
#   info         key=value lines: distribution, codename, kernel, nginx and redis
#                versions, blob.bin's sha256, build date; VERSION: the kernel version
# The guest runs systemd, networkd (DHCP on en*), nginx on port 80 (/var/www/html,
# with a 1 MiB blob.bin), redis on 0.0.0.0:6379, sshd, a root console on ttyS0 and
# a root shell without login on ttyS1. /etc/machine-id is empty, so every VM makes
# its own on its first boot.
#
# The image is made without loop devices or mounts: mmdebstrap into a directory,
# mkfs.ext4 -d and mkfs.vfat + mtools into partition files, sfdisk and dd into
# disk.img. A run whose stamp (this script's sha256 plus the name) matches and whose
# outputs exist does nothing. The build happens in a sibling directory renamed into
# place at the end, and runs for one name are serialized with flock on
# OUTDIR/.lock-<name>. An out-of-date image whose disk.img a process holds open
# (fuser: VMs run on overlays of it) is left as it is, with a warning. Needs root
# and the Debian packages mmdebstrap, e2fsprogs, dosfstools, mtools, fdisk (and
# psmisc for fuser). Prints the output directory on its last line.
set -euo pipefail

me=build-distro-guest
name=${1:-}
outdir=${2:-/var/lib/escdr/guests}
case "$name" in
  debian-12) suite=bookworm; nginx=nginx-light ;;
  debian-13) suite=trixie; nginx=nginx ;;
  *) echo "$me: usage: $0 debian-12|debian-13 [OUTDIR]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "$me: must run as root (mmdebstrap, file ownership)" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mmd mcopy sfdisk flock sha256sum perl unshare; do
  command -v "$tool" >/dev/null ||
    { echo "$me: $tool not found (apt-get install mmdebstrap e2fsprogs dosfstools mtools fdisk)" >&2; exit 1; }
done

out=$outdir/$name
mkdir -p "$outdir"
exec 9>"$outdir/.lock-$name"
flock 9

stamp="$(sha256sum <"$0" | cut -d' ' -f1) $name"
if [ "$(cat "$out/.stamp" 2>/dev/null || true)" = "$stamp" ] &&
   [ -s "$out/disk.img" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] &&
   [ -s "$out/cmdline" ] && [ -s "$out/info" ]; then
  echo "$me: $out is up to date" >&2
  echo "$out"
  exit 0
fi
# Overlays of running VMs name disk.img: swapping it under them would corrupt them.
in_use() {
  [ -s "$out/disk.img" ] && command -v fuser >/dev/null && fuser -s "$out/disk.img" 2>/dev/null || return 1
  echo "$me: $out is out of date but its disk.img is in use; left as it is (stop its VMs to rebuild)" >&2
  echo "$out"
}
in_use && exit 0

tmp=$(mktemp -d "$outdir/.$name.partial.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf --one-file-system "$tmp" "$tmp.old"' EXIT
root=$tmp/root
start=$SECONDS

# fstab and the initramfs config go in before the kernel, so its install makes the
# only initramfs: e2fsck and just the drivers a QEMU guest boots from (small and
# quick under TCG).
initramfs_hook='echo "/dev/vda2 / ext4 rw,errors=remount-ro 0 1" >"$1/etc/fstab"
mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"
printf "MODULES=list\nFSTYPE=ext4\n" >"$1/etc/initramfs-tools/conf.d/escdr"
printf "%s\n" "#!/bin/sh" "[ \"\$1\" = prereqs ] && exit 0" ". /usr/share/initramfs-tools/hook-functions" \
  "manual_add_modules virtio_pci virtio_blk virtio_net ext4" >"$1/etc/initramfs-tools/hooks/escdr"
chmod 755 "$1/etc/initramfs-tools/hooks/escdr"'
echo "$me: bootstrapping Debian $suite into $root" >&2
# A private mount namespace: mmdebstrap's mounts in the tree die with it.
unshare --mount --propagation private mmdebstrap --variant=minbase --essential-hook="$initramfs_hook" \
  --include=systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,systemd-boot-efi,e2fsprogs,$nginx,redis-server,openssh-server,iproute2,procps,netbase \
  "$suite" "$root" >&2

# Identity, network and services (the files below are the whole configuration).
echo "escdr-$name" >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tescdr-%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$name" >"$root/etc/hosts"
echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"   # QEMU user networking's DNS
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"   # no password; sshd refuses empty ones: console only
printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/20-en.network"
mkdir -p "$root/etc/systemd/system/serial-getty@ttyS1.service.d"
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root -L --noclear 115200 %%I $TERM\n' \
  >"$root/etc/systemd/system/serial-getty@ttyS1.service.d/autologin.conf"
# TCG on a busy host runs a guest many times slower than hardware: a device or
# service start may take minutes (90 s timeouts cost ttyS1's getty in a test).
mkdir -p "$root/etc/systemd/system.conf.d"
printf '[Manager]\nDefaultTimeoutStartSec=10min\nDefaultDeviceTimeoutSec=10min\n' >"$root/etc/systemd/system.conf.d/escdr-tcg.conf"
# ttyS1 is a shell for programs: no motd, no line editing, colours or pager.
touch "$root/root/.hushlogin"
printf '%s\n' 'if [ "$(tty)" = /dev/ttyS1 ]; then set +o emacs; export TERM=dumb NO_COLOR=1 SYSTEMD_PAGER=cat PAGER=cat; fi' >>"$root/root/.bashrc"
systemctl --root="$root" --quiet enable systemd-networkd.service serial-getty@ttyS1.service ssh.service nginx.service redis-server.service
systemctl --root="$root" --quiet mask apt-daily.timer apt-daily-upgrade.timer man-db.timer dpkg-db-backup.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer logrotate.timer systemd-firstboot.service
# The AF_VSOCK probe of Debian 13's ssh generator only fails in a QEMU guest.
mkdir -p "$root/etc/systemd/system-generators"
ln -sf /dev/null "$root/etc/systemd/system-generators/systemd-ssh-generator"
sed -i -e 's/^bind .*/bind 0.0.0.0/' -e 's/^protected-mode .*/protected-mode no/' "$root/etc/redis/redis.conf"
grep -q '^bind 0.0.0.0$' "$root/etc/redis/redis.conf" && grep -q '^protected-mode no$' "$root/etc/redis/redis.conf" ||
  { echo "$me: could not set bind/protected-mode in /etc/redis/redis.conf" >&2; exit 1; }
pretty=$(. "$root/etc/os-release" && echo "$PRETTY_NAME")
printf '<!DOCTYPE html>\n<html><head><title>escdr %s</title></head>\n<body><h1>escdr guest: %s</h1></body></html>\n' \
  "$name" "$pretty" >"$root/var/www/html/index.html"
# 1 MiB of fixed pseudo-random bytes (perl's rand is drand48: the same everywhere).
perl -e 'srand(20261207); print pack("V*", map { int(rand(4294967296)) } 1 .. 262144)' >"$root/var/www/html/blob.bin"

# The tree is final: mark /etc and /var up to date with /usr, as systemd-update-done
# would, so that no first boot rebuilds caches that dpkg already built.
for d in etc var; do
  printf 'TIMESTAMP_NSEC=%s\n' "$(stat -c %.9Y "$root/usr" | tr -d .)" >"$root/$d/.updated"
  touch -r "$root/usr" "$root/$d/.updated"
done

# Kernel, initramfs and facts.
kver=$(ls "$root"/boot/vmlinuz-* | sed 's|.*/vmlinuz-||' | sort -V | tail -n 1)
[ -s "$root/boot/initrd.img-$kver" ] || { echo "$me: no initramfs for kernel $kver in the image" >&2; exit 1; }
cp "$root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$tmp/initrd.img"
cmdline='root=/dev/vda2 rw console=ttyS0'
echo "$cmdline" >"$tmp/cmdline"
echo "$kver" >"$tmp/VERSION"
pkgver() { dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Version}' "$1"; }
{
  echo "name=$name"
  echo "distribution=$pretty"
  echo "codename=$suite"
  echo "kernel=$kver"
  echo "nginx=$(pkgver "$nginx")"
  echo "redis=$(pkgver redis-server)"
  echo "blob_sha256=$(sha256sum <"$root/var/www/html/blob.bin" | cut -d' ' -f1)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$tmp/info"

# EFI system partition: FAT32 with systemd-boot as the removable-media loader.
efi=$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[ -s "$efi" ] || { echo "$me: $efi missing (systemd-boot-efi)" >&2; exit 1; }
esp=$tmp/esp.img
mkfs.vfat -F 32 -n ESP -C "$esp" $((100 * 1024)) >/dev/null
printf 'default debian.conf\ntimeout 0\neditor no\n' >"$tmp/loader.conf"
printf 'title %s\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s\n' "$pretty" "$cmdline" >"$tmp/debian.conf"
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$esp" "$efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$tmp/loader.conf" ::/loader/loader.conf
mcopy -i "$esp" "$tmp/debian.conf" ::/loader/entries/debian.conf
mcopy -i "$esp" "$tmp/vmlinuz" "$tmp/initrd.img" ::/
rm -f "$tmp/loader.conf" "$tmp/debian.conf"

# Root file system, made from the tree, then the GPT disk (sectors of 512 bytes).
esp_start=2048 esp_size=$((100 * 2048))
root_start=$((esp_start + esp_size)) disk_size=$((2 * 1024 * 1024 * 2))
root_size=$(( (disk_size - 34 - root_start) / 2048 * 2048 ))   # the backup GPT takes the last 33
truncate -s $((root_size * 512)) "$tmp/root.ext4"
mkfs.ext4 -q -F -L escdr-root -d "$root" "$tmp/root.ext4"
rm -rf --one-file-system "$root"
truncate -s $((disk_size * 512)) "$tmp/disk.img"
sfdisk --quiet "$tmp/disk.img" <<EOF
label: gpt
start=$esp_start, size=$esp_size, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition"
start=$root_start, size=$root_size, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="escdr-root"
EOF
dd if="$esp" of="$tmp/disk.img" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
dd if="$tmp/root.ext4" of="$tmp/disk.img" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
rm -f "$esp" "$tmp/root.ext4"
echo "$stamp" >"$tmp/.stamp"

# Swap the finished directory in; the old one (if any) goes only after.
in_use && exit 0
[ -e "$out" ] && mv "$out" "$tmp.old"
mv "$tmp" "$out"
rm -rf --one-file-system "$tmp.old"
trap - EXIT
echo "$me: built $out in $((SECONDS - start)) s (kernel $kver, disk $(du -k "$out/disk.img" | cut -f1) KiB used)" >&2
echo "$out"
