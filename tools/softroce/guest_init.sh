#!/bin/busybox sh
# /init of the Soft-RoCE guest (tools/softroce/prepare copies it into the initramfs).
#
# tools/softroce/run boots the guest with two virtio-9p shares: the host's / read-only (tag
# "host") and a fresh writable host temp dir (tag "share") holding command.sh. This script brings
# up Soft-RoCE (rxe0 on a dummy netdev, 10.77.0.1; or on a virtio-net wire to a second guest,
# 10.77.0.N: run --host N), runs command.sh chrooted in the host's root,
# writes its exit status to the share's "status" file and powers off.
# Serial ports: ttyS0 = kernel console (log only), ttyS1 = command stdout, ttyS2 = its stderr.

/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /dev /proc /sys /share /host
mount -t devtmpfs dev /dev
exec </dev/null >/dev/console 2>&1   # the kernel found no /dev/console in the initramfs
stty -F /dev/console -onlcr

# A setup failure is reported in the console log and, once the share is mounted, to the host
# through share/setup_error; then power off without writing a status.
share_up=
fail() {
  echo "softroce: guest setup failed: $*"
  [ -n "$share_up" ] && echo "$*" >/share/setup_error
  poweroff -f
}

# Kernel modules (virtio, 9p, rdma_rxe, ...) in dependency order, as prepare resolved them
# (lines "FILE [PARAMETERS]").
while read -r m params; do
  # shellcheck disable=SC2086 # parameters are separate words
  insmod "/lib/modules/$m" $params || fail "cannot load module $m"
done </lib/modules/order

# The shares, then the host's root prepared for chroot: kernel filesystems, and fresh tmpfs on
# /tmp and /run (the host's own are not wanted). The share appears as /run/softroce.
# The root is cached in the guest (cache=loose: programs start about 3x faster); it is read-only
# and taken as unchanging during the run.
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$opts" share /share || fail "cannot mount the writable share"
share_up=1
h=/host
mount -t 9p -o "$opts,ro,cache=loose" host $h || fail "cannot mount the host root"
{ mount -t proc proc $h/proc && mount -t sysfs sys $h/sys && mount -t devtmpfs dev $h/dev &&
  mkdir -p $h/dev/pts $h/dev/shm && mount -t devpts devpts $h/dev/pts &&
  mount -t tmpfs tmp $h/dev/shm && mount -t tmpfs tmp $h/tmp && mount -t tmpfs run $h/run &&
  mkdir $h/run/softroce && mount -o bind /share $h/run/softroce; } || fail "cannot mount filesystems"

# Host directories shared writable (run --rw DIR): lines "TAG DIR" in share/rw.
while read -r tag dir; do
  { mkdir -p "$h$dir" && mount -t 9p -o "$opts" "$tag" "$h$dir"; } || fail "cannot mount $dir"
done </share/rw

# Soft-RoCE (busybox ip, then the host's rdma tool from iproute2): rxe0 on a dummy netdev at
# 10.77.0.1, or, in the two-host mode (share/host holds this guest's number N), on the
# virtio-net wire (eth0) at 10.77.0.N.
in_host() { chroot $h "$@"; }
ip link set lo up || fail "cannot bring up lo"
host=$(cat /share/host 2>/dev/null || true)
if [ -n "$host" ]; then
  addr=10.77.0.$host
  { ip addr add $addr/24 dev eth0 && ip link set eth0 up &&
    in_host rdma link add rxe0 type rxe netdev eth0; } || fail "cannot bring up rxe0 on eth0"
else
  addr=10.77.0.1
  { ip link add d0 type dummy && ip addr add $addr/24 dev d0 && ip link set d0 up &&
    in_host rdma link add rxe0 type rxe netdev d0; } || fail "cannot bring up rxe0"
fi
n=0   # a wire's port turns ACTIVE once its link is up
until grep -q ACTIVE $h/sys/class/infiniband/rxe0/ports/1/state; do
  [ $n -ge 50 ] && fail "rxe0 port is not active"
  sleep 0.1; n=$((n + 1))
done
ulimit -l unlimited || fail "cannot lift the locked-memory limit"

# The command's stdout and stderr: raw serial ports (no CR added). When the host's stream is not
# a terminal, go through a pipe instead so the command sees what it would see on the host.
exec 3>/dev/ttyS1 4>/dev/ttyS2
{ stty -F /dev/ttyS1 raw -echo && stty -F /dev/ttyS2 raw -echo; } || fail "cannot set up the serial ports"
out=/dev/ttyS1 err=/dev/ttyS2 readers=
if [ ! -e /share/stdout_tty ]; then mkfifo /out; cat /out >&3 & readers="$readers $!"; out=/out; fi
if [ ! -e /share/stderr_tty ]; then mkfifo /err; cat /err >&4 & readers="$readers $!"; err=/err; fi
echo "softroce: rxe0 up on $addr" >&4
echo "softroce: rxe0 up, running the command"   # console log: where a hung run got to

in_host /usr/bin/env -i /bin/bash /run/softroce/command.sh >$out 2>$err
status=$?

# Let the pipes drain (at most ~3 s: background processes left by the command may hold them),
# wait for the serial ports to send everything (stty drains), then report and power off.
readers_alive() { for p in $readers; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
n=0
while readers_alive && [ $n -lt 30 ]; do sleep 0.1; n=$((n + 1)); done
stty -F /dev/ttyS1 raw; stty -F /dev/ttyS2 raw
echo "softroce: command exited with status $status"
echo $status >/share/status
poweroff -f
