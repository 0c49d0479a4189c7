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
# NICs are found by MAC: with several, the kernel's eth0, eth1, ... order is not the
# command line's.
nic_by_mac() {
    for n in /sys/class/net/*; do
        [ "$(cat "$n/address" 2>/dev/null)" = "$1" ] && echo "${n##*/}" && return 0
    done
    return 1
}
user_nic=$(nic_by_mac @USER_NIC_MAC@) || user_nic=eth0
if [ -e "/sys/class/net/$user_nic" ]; then
    ip addr add 10.0.2.15/24 dev "$user_nic" &&
        ip link set "$user_nic" up &&
        ip route add default via 10.0.2.2 ||
        echo "cove-init: network configuration failed"
else
    echo "cove-init: no network device"
fi
# NICs on cove networks (`@NET_ARG@=<mac>`): an address by DHCP from the network's dnsmasq,
# which also answers for the names of the network's VMs. On them, the user-mode NIC carries
# only port forwards (QEMU restricts it): the way out, if any, is a network with NAT.
mkdir -p /etc/cove
cat > /etc/cove/udhcpc.sh <<'EOS'
#!/bin/sh
# Called by busybox udhcpc with the lease in the environment.
case "$1" in
bound | renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "cove-init: $interface has $ip/${mask:-24} from DHCP" > /dev/console
    # The first network with a way out (a router: NAT) carries the default route; the
    # user-mode NIC is then restricted to port forwards.
    if [ -n "$router" ] && [ ! -e /etc/cove/routed ]; then
        ip route replace default via "${router%% *}" dev "$interface" && : > /etc/cove/routed
    fi
    for d in $search $domain; do echo "search $d"; done >> /etc/cove/resolv.net
    for d in $dns; do echo "nameserver $d"; done >> /etc/cove/resolv.net
    ;;
esac
exit 0
EOS
chmod 0755 /etc/cove/udhcpc.sh
for mac in $(set -f; for a in $(cat /proc/cmdline); do case "$a" in @NET_ARG@=*) echo "${a#*=}" ;; esac; done); do
    i=0
    until nic=$(nic_by_mac "$mac") || [ $i -ge 100 ]; do sleep 0.02; i=$((i + 1)); done
    if [ -z "$nic" ]; then
        echo "cove-init: no NIC with MAC $mac (cove network)"
        continue
    fi
    ip link set "$nic" up
    udhcpc -i "$nic" -f -q -n -t 20 -T 1 -s /etc/cove/udhcpc.sh >/dev/null ||
        echo "cove-init: no DHCP answer on $nic ($mac) from its cove network"
done

echo "@MOUNTING_ROOT@"
mount -t ext4 -o rw "$root" /newroot || fatal "cannot mount $root as ext4"
target=$(cmdline_arg cove.init) || target=/sbin/cove-init
if [ ! -x "/newroot$target" ] && [ ! -L "/newroot$target" ]; then
    fatal "the root filesystem has no executable $target"
fi
mkdir -p /newroot/dev /newroot/proc /newroot/sys
# Names of a cove network's VMs (and, with NAT, the world's) resolve through its dnsmasq.
if [ -f /etc/cove/resolv.net ]; then
    rm -f /newroot/etc/resolv.conf
    { grep '^search' /etc/cove/resolv.net | head -1; grep '^nameserver' /etc/cove/resolv.net; } > /newroot/etc/resolv.conf
fi
mount --move /dev /newroot/dev
umount /proc /sys
echo "cove-init: switching root to $target"
exec switch_root /newroot "$target"
fatal "switch_root failed"
