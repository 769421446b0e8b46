#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for this project: system packages, then
# a virtualenv in .venv with the project (and its test tools) installed.
# Usage: scripts/setup.sh [--test | --unit]
#   --test: everything the whole test suite needs (browsers, RabbitMQ, libvirtd...);
#   --unit: only what the unit tier (tests/unit) needs: the base packages and the venv with the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# txamqp ships no AMQP spec; Debian's amqp-specs has RabbitMQ's (with confirms).
[ -f /usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml ] || need_apt+=(amqp-specs)
# Target images are converted with qemu-img; the Mock OS makes its disk with mke2fs.
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
command -v mke2fs >/dev/null || need_apt+=(e2fsprogs)
# libvirt-python is compiled by pip against the system's libvirt.
dpkg-query -W -f='${Status}' libvirt-dev 2>/dev/null | grep -q 'install ok installed' || need_apt+=(libvirt-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v gcc >/dev/null || need_apt+=(gcc)
[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)/Python.h" ] \
    || need_apt+=(python3-dev)
if [ "${1:-}" = "--test" ]; then
    command -v wrk >/dev/null || need_apt+=(wrk)
    # The status page's browser test drives Debian's Chromium with Playwright
    # (no browser download: Playwright is pointed at /usr/bin/chromium).
    command -v chromium >/dev/null || need_apt+=(chromium)
    # The event tests talk to a real RabbitMQ on 127.0.0.1:5672.
    command -v rabbitmq-server >/dev/null || need_apt+=(rabbitmq-server)
    # The store tests (and the multi-node ones) use a real PostgreSQL on 127.0.0.1:5432.
    command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
    # The real-Debian end-to-end tests make a Debian 12 root file system with debootstrap.
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need_apt+=(debootstrap)
    # The kickstart's package-manifest query runs against a real RPM database of packages built with rpmbuild.
    command -v rpmbuild >/dev/null || need_apt+=(rpm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${1:-}" = "--test" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    echo "setup: starting RabbitMQ"
    rabbitmq-server -detached
    rabbitmqctl await_startup >/dev/null
fi

if [ "${1:-}" = "--test" ]; then
    # PostgreSQL for the store tests: the first cluster, trust for user postgres on 127.0.0.1, started by hand
    # (no systemd).  The tests make and drop their own databases.
    pg_version='' pg_cluster=''
    read -r pg_version pg_cluster < <(pg_lsclusters --no-header | awk 'NR == 1 {print $1, $2}') || true
    if [ -z "$pg_version" ]; then
        # Debian's package makes a cluster when installed; make one if there is none.
        pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n 1) pg_cluster=main
        echo "setup: creating the PostgreSQL cluster $pg_version/$pg_cluster"
        pg_createcluster "$pg_version" "$pg_cluster" >/dev/null
    fi
    pg_hba="/etc/postgresql/$pg_version/$pg_cluster/pg_hba.conf"
    if ! grep -Eq '^host[[:space:]]+all[[:space:]]+(all|postgres)[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$pg_hba"; then
        echo "setup: PostgreSQL trusts user postgres on 127.0.0.1"
        sed -i '1i host all postgres 127.0.0.1/32 trust' "$pg_hba"
        pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" reload 2>/dev/null || true
    fi
    if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
        echo "setup: starting PostgreSQL $pg_version/$pg_cluster"
        pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" start
    fi
fi

if [ "${1:-}" = "--test" ]; then
    # The OS install tests boot a real VM: libvirtd + QEMU, started by hand (no systemd).
    scripts/libvirt-up.sh
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--unit" ]; then
    # A regular (not editable) install: the tests exercise what a user gets.
    .venv/bin/python -m pip install -q --force-reinstall --no-deps . >/dev/null
    .venv/bin/python -m pip install -q '.[test]'
else
    .venv/bin/python -m pip install -q --force-reinstall --no-deps . >/dev/null
    .venv/bin/python -m pip install -q .
fi
