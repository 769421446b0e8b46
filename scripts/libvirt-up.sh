#!/usr/bin/env bash
# Installs and starts libvirtd + QEMU on a Debian 12 machine without systemd,
# as the real-install tests need them. Idempotent: run it as often as you like.
# Needs root. QEMU runs as root (see ../shared/PEERS.md: as libvirt-qemu,
# libvirt re-probes QEMU on every call because /dev/kvm is root-only).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "libvirt-up: must run as root" >&2
    exit 1
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
need_apt=()
command -v libvirtd >/dev/null || need_apt+=(libvirt-daemon)
installed libvirt-daemon-driver-qemu || need_apt+=(libvirt-daemon-driver-qemu)
command -v virsh >/dev/null || need_apt+=(libvirt-clients)
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
# The tests' stand-in installer is a busybox-static initramfs.
installed busybox-static || need_apt+=(busybox-static)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "libvirt-up: installing Debian packages: ${need_apt[*]}"
    # Wait for another apt run (up to 5 min) rather than fail on its lock.
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The QEMU driver refuses to load without its user and group, even when
# qemu.conf makes QEMU run as root.
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null \
    || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

# Debian ships qemu.conf in a package --no-install-recommends leaves out.
conf=/etc/libvirt/qemu.conf
mkdir -p /etc/libvirt
touch "$conf"
set_qemu_conf() {  # key value: replace an active or commented-out line, else append
    local key=$1 value=$2
    if grep -Eq "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\"${value}\"" "$conf"; then
        return
    fi
    if grep -Eq "^[[:space:]]*#?[[:space:]]*${key}[[:space:]]*=" "$conf"; then
        sed -i -E "0,/^[[:space:]]*#?[[:space:]]*${key}[[:space:]]*=.*/s//${key} = \"${value}\"/" "$conf"
    else
        echo "${key} = \"${value}\"" >>"$conf"
    fi
    restart_libvirtd=1
}
restart_libvirtd=0
set_qemu_conf user root
set_qemu_conf group root

# Domains fail to start unless virtlogd runs.
if ! pgrep -x virtlogd >/dev/null; then
    echo "libvirt-up: starting virtlogd"
    mkdir -p /var/log/libvirt/qemu
    virtlogd -d
fi

if [ "$restart_libvirtd" = 1 ] && pid=$(pgrep -x libvirtd); then
    echo "libvirt-up: restarting libvirtd (qemu.conf changed)"
    kill "$pid"
    for _ in $(seq 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.2; done
fi
if ! pgrep -x libvirtd >/dev/null; then
    echo "libvirt-up: starting libvirtd"
    libvirtd -d
fi

for _ in $(seq 60); do
    if virsh -c qemu:///system version >/dev/null 2>&1; then
        echo "libvirt-up: libvirtd answers on qemu:///system"
        exit 0
    fi
    sleep 0.5
done
echo "libvirt-up: libvirtd did not answer on qemu:///system within 30 s" >&2
exit 1
