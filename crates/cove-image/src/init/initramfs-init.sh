#!/bin/sh
# cove's initramfs /init: load the modules the image needs, find the root
# filesystem by its label, configure QEMU user-mode networking and hand over
# to the root filesystem's init. Every stage prints a `cove-init:` marker so
# `cove why` can tell how far a failed boot got.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

# A subshell with `set -f`: the command line is split on whitespace, and a
# `*` in it is never expanded against the initramfs's files.
cmdline_arg() (
    set -f
    for a in $(cat /proc/cmdline); do
        case "$a" in "$1"=*) echo "${a#*=}"; exit 0 ;; esac
    done
    exit 1
)

fatal() {
    echo "@FATAL@ $*"
    if grep -qw cove.debug=shell /proc/cmdline 2>/dev/null; then
        echo "cove-init: dropping to a shell (cove.debug=shell)"
        exec sh
    fi
    echo "cove-init: powering off"
    poweroff -f
    exit 1
}

echo "cove-init: initramfs started"
mkdir -p /dev /proc /sys /newroot
mount -t devtmpfs devtmpfs /dev || fatal "cannot mount devtmpfs (CONFIG_DEVTMPFS)"
mount -t proc proc /proc || fatal "cannot mount /proc (CONFIG_PROC_FS)"
mount -t sysfs sysfs /sys || fatal "cannot mount /sys (CONFIG_SYSFS)"

load_modules() {
    while read -r m; do
        [ -n "$m" ] || continue
        out=$(insmod "/lib/modules/$m.ko" 2>&1) || {
            case "$out" in
                *"File exists"*) ;;
                *) echo "cove-init: module $m failed to load: $out" ;;
            esac
        }
    done < "$1"
}

echo "@LOADING_MODULES@"
load_modules /etc/cove/modules
# Shared folders (virtiofs) only when the VM has some: no cost to the others' boot.
if grep -q "cove.share=" /proc/cmdline && [ -f /etc/cove/modules.share ]; then
    load_modules /etc/cove/modules.share
fi

echo "cove-init: finding root"
root=$(cmdline_arg cove.root)
if [ -z "$root" ]; then
    i=0
    while :; do
        root=$(findfs LABEL=@ROOT_LABEL@ 2>/dev/null) && break
        i=$((i + 1))
        if [ $i -ge 200 ]; then
            ls /sys/block 2>/dev/null | sed 's/^/cove-init: block device: /'
            fatal "no block device with LABEL=@ROOT_LABEL@ after 10 s (is the root disk attached? did virtio_blk load?)"
        fi
        sleep 0.05
    done
fi
echo "cove-init: root is $root"

echo "cove-init: configuring network"
ip link set lo up 2>/dev/null
if grep -qx 0x0001 /sys/bus/virtio/devices/*/device 2>/dev/null; then
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.02; i=$((i + 1)); done
fi
if [ -e /sys/class/net/eth0 ]; then
    ip addr add 10.0.2.15/24 dev eth0 &&
        ip link set eth0 up &&
        ip route add default via 10.0.2.2 ||
        echo "cove-init: network configuration failed"
else
    echo "cove-init: no network device"
fi

echo "@MOUNTING_ROOT@"
mount -t ext4 -o rw "$root" /newroot || fatal "cannot mount $root as ext4"
target=$(cmdline_arg cove.init) || target=/sbin/cove-init
if [ ! -x "/newroot$target" ] && [ ! -L "/newroot$target" ]; then
    fatal "the root filesystem has no executable $target"
fi
mkdir -p /newroot/dev /newroot/proc /newroot/sys
mount --move /dev /newroot/dev
umount /proc /sys
echo "cove-init: switching root to $target"
exec switch_root /newroot "$target"
fatal "switch_root failed"
