#!/usr/bin/env bash
# make-box.sh [BOXFILE]: build a Debian 12 (bookworm) libvirt Vagrant box offline, from the apt
# mirror only (debootstrap), with no download from Vagrant Cloud. Idempotent: an existing box
# file is kept (FORCE=1 rebuilds); a finished debootstrap root is reused.
#
#   VMR_DIR     work dir [~/.cache/hslab-vm]          VMR_MIRROR  apt mirror [http://deb.debian.org/debian]
#   VMR_DISK_GB virtual disk size [8]        BOXFILE     [$VMR_DIR/box/hslab-bookworm.box]
#
# The image: one MBR partition (ext4), GRUB (BIOS, written by hand: no loop-device probing), linux-image-amd64, systemd,
# openssh-server, sudo, user vagrant (insecure key, NOPASSWD sudo), ifupdown + dhclient on eth0
# (net.ifnames=0), rsync, and every apt package vagrant/provision.sh wants (so it never needs apt).
set -euo pipefail
W=${VMR_DIR:-$HOME/.cache/hslab-vm}
B=$W/box
BOXFILE=${1:-$B/hslab-bookworm.box}
MIRROR=${VMR_MIRROR:-http://deb.debian.org/debian}
SIZE_GB=${VMR_DISK_GB:-8}
ROOT=$B/rootfs
MNT=$B/mnt
RAW=$B/disk.raw
t0=$(date +%s)
say() { printf 'make-box: %s\n' "$*"; }

[[ $(id -u) -eq 0 ]] || { echo "make-box: must run as root" >&2; exit 1; }
if [[ -s $BOXFILE && -z ${FORCE:-} ]]; then
  say "$BOXFILE exists (FORCE=1 to rebuild)"; exit 0
fi
mkdir -p "$B"; chmod 755 "$W" "$B"

need=()
for p in debootstrap qemu-utils e2fsprogs fdisk grub-common grub-pc-bin; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || need+=("$p")
done
if ((${#need[@]})); then
  say "apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

PUBKEY=$(find / -xdev -name vagrant.pub -path '*keys*' 2>/dev/null | head -n1)
[[ -s $PUBKEY ]] || { echo "make-box: vagrant.pub (Vagrant's insecure key) not found" >&2; exit 1; }

PKGS=linux-image-amd64,systemd-sysv,udev,kmod,openssh-server,sudo,ifupdown,isc-dhcp-client
PKGS+=,python3,python3-venv,rsync,iproute2,nftables,tcpdump,make,procps,ca-certificates
PKGS+=,netbase,less

if [[ ! -e $ROOT/.vmr-done ]]; then
  rm -rf "$ROOT"
  say "debootstrap bookworm from $MIRROR"
  debootstrap --include="$PKGS" bookworm "$ROOT" "$MIRROR" >"$B/debootstrap.log" 2>&1 ||
    { tail -n 30 "$B/debootstrap.log" >&2; exit 1; }
  touch "$ROOT/.vmr-done"
fi
say "debootstrap done after $(($(date +%s) - t0)) s"

# Guest configuration (all inside $ROOT; nothing on the host).
echo hslab-box >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\thslab-box\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
  >"$ROOT/etc/hosts"
cat >"$ROOT/etc/network/interfaces" <<'EOF'
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
allow-hotplug eth0
iface eth0 inet dhcp
EOF
rm -f "$ROOT/etc/resolv.conf"
: >"$ROOT/etc/machine-id"; rm -f "$ROOT/var/lib/dbus/machine-id"
chroot "$ROOT" id vagrant >/dev/null 2>&1 || chroot "$ROOT" useradd -m -s /bin/bash vagrant
echo vagrant:vagrant | chroot "$ROOT" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$ROOT/etc/sudoers.d/vagrant"
chmod 0440 "$ROOT/etc/sudoers.d/vagrant"
install -d -m 0700 "$ROOT/home/vagrant/.ssh"
install -m 0600 "$PUBKEY" "$ROOT/home/vagrant/.ssh/authorized_keys"
chroot "$ROOT" chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'UseDNS no' >"$ROOT/etc/ssh/sshd_config.d/vagrant.conf"
chroot "$ROOT" apt-get clean
KVER=$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n1)
KVER=${KVER#vmlinuz-}

# Disk: raw image, one bootable partition, ext4, GRUB in the MBR gap.
rm -f "$RAW"; truncate -s "${SIZE_GB}G" "$RAW"
echo 'start=2048, type=83, bootable' | sfdisk -q "$RAW"
LOOP=$(losetup -f --show -P "$RAW")
cleanup() {
  mountpoint -q "$MNT" && umount "$MNT"
  [[ -n ${MADE_NODE:-} ]] && rm -f "${LOOP}p1"
  if [[ -n ${LOOP:-} ]]; then losetup -d "$LOOP" 2>/dev/null || true; fi
}
trap cleanup EXIT
# Some kernels (this Firecracker one) do not scan the table themselves: add the partition with
# partx (BLKPG), and make its node by hand where no udev runs.
[[ -e /sys/block/${LOOP#/dev/}/${LOOP#/dev/}p1 ]] || partx -a "$LOOP"
if [[ ! -b ${LOOP}p1 ]]; then
  IFS=: read -r maj min <"/sys/block/${LOOP#/dev/}/${LOOP#/dev/}p1/dev"
  mknod "${LOOP}p1" b "$maj" "$min"; MADE_NODE=1
fi
mkfs.ext4 -q -L root "${LOOP}p1"
UUID=$(blkid -s UUID -o value "${LOOP}p1")
mkdir -p "$MNT"; mount "${LOOP}p1" "$MNT"
tar -C "$ROOT" --exclude=./.vmr-done -cf - . | tar -C "$MNT" -xpf -
echo "UUID=$UUID / ext4 errors=remount-ro 0 1" >"$MNT/etc/fstab"
# GRUB by hand (grub-install cannot map a loop partition to a BIOS drive here): core.img with
# the modules it needs at LBA 1.. (diskboot's default blocklist starts at LBA 2, boot.img's at
# LBA 1), boot.img's code in the MBR's first 440 bytes (the partition table is kept).
G=/usr/lib/grub/i386-pc
mkdir -p "$MNT/boot/grub/i386-pc"
cp "$G"/*.mod "$G"/*.lst "$MNT/boot/grub/i386-pc/"
grub-mkimage -O i386-pc -o "$B/core.img" -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 normal linux search search_fs_uuid serial terminal echo test configfile
(( $(stat -c %s "$B/core.img") < 2047 * 512 )) || { echo "make-box: core.img too big" >&2; exit 1; }
cat >"$MNT/boot/grub/grub.cfg" <<EOF
set timeout=0
set default=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry 'Debian GNU/Linux 12' {
  insmod part_msdos
  insmod ext2
  search --no-floppy --fs-uuid --set=root $UUID
  linux /boot/vmlinuz-$KVER root=UUID=$UUID ro net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200
  initrd /boot/initrd.img-$KVER
}
EOF
sync; umount "$MNT"; [[ -n ${MADE_NODE:-} ]] && rm -f "${LOOP}p1"; losetup -d "$LOOP"; LOOP=
trap - EXIT
dd if="$G/boot.img" of="$RAW" bs=440 count=1 conv=notrunc status=none
dd if="$B/core.img" of="$RAW" bs=512 seek=1 conv=notrunc status=none
rm -f "$B/core.img"

# Box: metadata.json + Vagrantfile + box.img (qcow2), as vagrant-libvirt expects.
PK=$B/pkg; rm -rf "$PK"; mkdir -p "$PK"
qemu-img convert -O qcow2 "$RAW" "$PK/box.img"; rm -f "$RAW"
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$SIZE_GB" >"$PK/metadata.json"
cat >"$PK/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
  end
end
EOF
tar -C "$PK" -cf "$BOXFILE.tmp" metadata.json Vagrantfile box.img
mv -f "$BOXFILE.tmp" "$BOXFILE"; rm -rf "$PK"
say "box $BOXFILE ($(du -h "$BOXFILE" | cut -f1)), kernel $KVER"
say "took $(($(date +%s) - t0)) s"
