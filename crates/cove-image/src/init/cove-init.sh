#!/bin/sh
# cove's init in the root filesystem (PID 1): mount the API filesystems,
# keep the cove agent running, start the image's services, then reap
# orphans forever.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
cd /

# Under TCG every fork and exec of busybox costs 15-25 ms of boot, so this part
# uses builtins where it can and mounts with one `mount -a` (busybox's and
# util-linux's both take `-T`). /proc first: util-linux's `mount -a` reads
# /proc/self/mountinfo, and skips what an initramfs already mounted.
[ -e /proc/self ] || mount -t proc proc /proc
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/log
mount -a -T @FSTAB_PATH@ || echo "cove-init: some of @FSTAB_PATH@ could not be mounted" > /dev/console
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
# An idle guest should cost its host nothing: proactive compaction wakes kcompactd twice a
# second, about half of an idle guest's wakeups (each one host CPU work under emulation), for
# huge pages a small VM hardly gets anyway. (cove's own kernel has no compaction at all.)
[ -w /proc/sys/vm/compaction_proactiveness ] && echo 0 > /proc/sys/vm/compaction_proactiveness
name=
[ -f /etc/hostname ] && read -r name < /etc/hostname
[ -n "$name" ] && echo "$name" > /proc/sys/kernel/hostname
echo "cove-init: root filesystem up" > /dev/console

# Data disks: `@DISK_ARG@=<serial>:<path>` on the kernel command line (cove
# writes it from the VM's record). Disks are found by their virtio serial,
# so their order does not matter.
mount_data_disk() {
    serial=$1 target=$2 dev=""
    for s in /sys/block/*/serial; do
        got=
        read -r got 2>/dev/null < "$s"
        [ "$got" = "$serial" ] && dev=/dev/${s#/sys/block/} && dev=${dev%/serial}
    done
    if [ -z "$dev" ]; then
        echo "cove-init: data disk $serial not found (no /sys/block/*/serial says so)" > /dev/console
        return
    fi
    staging=/run/cove/disk-$serial
    mkdir -p "$staging" "$target"
    if ! mount -t ext4 "$dev" "$staging"; then
        echo "cove-init: data disk $serial ($dev) could not be mounted on $target" > /dev/console
        return
    fi
    # A grown disk: grow its filesystem too (online, ext4 allows it).
    command -v resize2fs >/dev/null 2>&1 && resize2fs "$dev" >/dev/null 2>&1
    # A new, empty disk takes what the image had at its mount point, like a
    # container volume, so e.g. a database created at build time moves onto it.
    # The copy is synced before the disk is mounted (and so before "ready"):
    # left in the page cache, a VMM kill in the next ~30 s emptied the files
    # (issue 10). A marker, itself synced first, says a fill is under way: a
    # fill cut short by a kill is wiped and done again at the next boot
    # instead of passing for a complete one.
    marker=$staging/.cove-fill-incomplete
    if [ -e "$marker" ]; then
        echo "cove-init: data disk $serial: an earlier fill was cut short; filling it again" > /dev/console
        for f in "$staging"/* "$staging"/.[!.]* "$staging"/..?*; do
            case "$f" in "$staging/lost+found" | "$marker") continue ;; esac
            [ -e "$f" ] || [ -L "$f" ] && rm -rf "$f"
        done
    fi
    if [ -e "$marker" ] || { [ -z "$(ls -A "$staging" | grep -v '^lost+found$')" ] && [ -n "$(ls -A "$target" 2>/dev/null)" ]; }; then
        : > "$marker" && sync
        if cp -a "$target"/. "$staging"/ &&
            chown "$(stat -c %u:%g "$target")" "$staging" &&
            chmod "$(stat -c %a "$target")" "$staging" &&
            sync && rm -f "$marker" && sync; then
            echo "cove-init: data disk $serial filled from the image's $target" > /dev/console
        else
            echo "cove-init: data disk $serial could not be filled from the image's $target; left unmounted" > /dev/console
            umount "$staging"
            return
        fi
    fi
    mount --move "$staging" "$target" &&
        echo "cove-init: data disk $serial mounted on $target" > /dev/console
}
# Split on whitespace only: `set -f` keeps a `*` or `?` on the command line
# from being expanded against the root filesystem's files.
set -f
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
    case "$arg" in
    @DISK_ARG@=*:/*)
        spec=${arg#@DISK_ARG@=}
        set +f
        mount_data_disk "${spec%%:*}" "${spec#*:}"
        set -f
        ;;
    esac
done
set +f

# Shared host folders: `cove.share=<tag>:<path>:<ro|rw>` (cove validated the path: letters,
# digits and / . _ - + @ only). Read-only is enforced on the host too.
set -f
for arg in $cmdline; do
    case "$arg" in
    cove.share=*:/*:ro | cove.share=*:/*:rw)
        spec=${arg#cove.share=}
        tag=${spec%%:*} rest=${spec#*:}
        path=${rest%:*} mode=${rest##*:}
        mkdir -p "$path" &&
            mount -t virtiofs -o "$mode" "$tag" "$path" &&
            echo "cove-init: shared folder $tag mounted on $path ($mode)" > /dev/console ||
            echo "cove-init: shared folder $tag could not be mounted on $path (no virtiofs in this kernel?)" > /dev/console
        ;;
    esac
done
set +f

# The agent first: on one vCPU the console shell's start-up would delay the
# agent's, which is what `cove start` waits for.
echo "cove-init: starting agent" > /dev/console
keeper=
if [ -x @AGENT_PATH@ ]; then
    (
        while :; do
            @AGENT_PATH@ </dev/null >/dev/null 2>/dev/console
            echo "cove-init: cove-agent exited with status $?, restarting" > /dev/console
            sleep 0.2
        done
    ) &
    keeper=$!
else
    echo "cove-init: this image has no agent (@AGENT_PATH@)" > /dev/console
fi

# A shell on the serial console for `cove console`, kept running. `setsid -c`
# makes the console its controlling terminal (job control, ^C) without a
# second shell to open it.
if [ -c /dev/@CONSOLE@ ]; then
    (
        while :; do
            setsid -c sh -l </dev/@CONSOLE@ >/dev/@CONSOLE@ 2>&1
            sleep 1
        done
    ) &
    keeper=${keeper:-$!}
fi

# run_service NAME USER COMMAND: keep COMMAND running as USER, its output in
# /var/log/cove/NAME.log.
run_service() {
    mkdir -p /var/log/cove
    echo "cove-init: starting service $1" > /dev/console
    (
        while :; do
            if [ "$2" = root ]; then
                sh -c "$3" </dev/null >>"/var/log/cove/$1.log" 2>&1
            else
                su -s /bin/sh -c "$3" "$2" </dev/null >>"/var/log/cove/$1.log" 2>&1
            fi
            echo "cove-init: service $1 exited with status $?, restarting in 1 s" > /dev/console
            sleep 1
        done
    ) &
}

#COVE_SERVICES#

echo "@READY@" > /dev/console
trap 'echo "cove-init: powering off" > /dev/console; kill -TERM -1; sleep 1; poweroff -f' TERM USR2
trap 'reboot -f' INT
# Reap orphans: `wait` reaps every child as it exits, orphans included, and
# blocks while a job runs. A job that never ends keeps it blocking (the agent's
# or the console's loop, or in an image with neither a `sleep`), instead of a
# `sleep 1` poll (a fork and exec every second, which an emulated guest pays
# for). A trapped signal ends `wait` too.
[ -n "$keeper" ] || { sleep 2147483647 & keeper=$!; }
while :; do
    wait
    kill -0 "$keeper" 2>/dev/null || { sleep 2147483647 & keeper=$!; }
done
