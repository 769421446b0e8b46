"""A real Debian 12 system for the end-to-end tests, and a stand-in installer that puts it on a disk.

debian-installer itself cannot run on these machines: the Debian mirror
reachable here serves no ``.udeb`` components.  So the tests build, once and
cached, a Debian 12 root file system with ``debootstrap`` from the mirror apt
uses on this machine (``root_filesystem``), and an installer initramfs of
their own (``installer_initramfs``) that does what debian-installer's last
steps do, driven by the ``/preseed.cfg`` the factory appends to its initrd:

1. loads the virtio and ext4 modules, brings up the network with busybox's
   ``udhcpc`` (QEMU's user network: the host is 10.0.2.2);
2. partitions ``/dev/vda`` (one bootable partition) and makes an ext4 file
   system on it (``sfdisk`` and ``mkfs.ext4`` taken, with their libraries,
   from the debootstrapped system itself);
3. fetches the root file system tarball from the preseed's mirror over HTTP
   and unpacks it into ``/target``;
4. checks that every package of ``pkgsel/include`` is in it (this installer
   cannot install packages: it says so and stops instead of pretending);
5. sets the root password from ``passwd/root-password-crypted``, writes
   ``fstab`` and the host name, makes the SSH host keys;
6. installs GRUB to ``/dev/vda`` with ``debian-installer/add-kernel-opts`` on
   the installed kernel's command line (``grub=False`` skips this: a disk
   without a boot loader, for the boot test's failure case);
7. runs ``preseed/late_command`` as debian-installer does (``sh -c`` on the
   value, ``/target`` mounted with /dev, /proc and /sys bound into it,
   ``in-target`` meaning a chroot into it), and powers off.

``lay_out_tree`` puts the system's own kernel, this initramfs and the
tarball where the factory's Debian plug-in looks on a mirror (no
``.treeinfo``: the netboot paths); ``serve`` serves it on 127.0.0.1 and
answers 404 for ``.treeinfo``.

Cached under ``$IMGFAC_TEST_CACHE`` (default ``~/.cache/imgfac-test``) in
``debian-12/``: made in a ``.part`` folder and renamed, so an interrupted run
never leaves a cache that looks whole.
"""

from __future__ import annotations

import functools
import gzip
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import fake_installer
from .fake_installer import Entry, char_device, directory, newc_archive, regular

SUITE = "bookworm"
#: What debootstrap adds to minbase: a bootable, reachable system, and the tools the installer borrows.
PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "grub-pc",
    "openssh-server",
    "ifupdown",
    "isc-dhcp-client",
    "fdisk",
    "e2fsprogs",
    "udev",
    "kmod",
)
#: Written last into the cache folder: the suite and packages the system was made from.
STAMP = "made-from.txt"
#: Where the root file system tarball sits in the install tree (the installer fetches it from the mirror).
ROOTFS_IN_TREE = "imgfac-test/debian-12-rootfs.tar"
#: Programs the installer takes from the debootstrapped system, with their libraries.
BORROWED = ("/usr/sbin/sfdisk", "/usr/sbin/mke2fs")
#: Kernel modules the installer loads (with what they depend on, in order).
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")
#: Lines the installer prints: the test and the benchmark wait for them or look for them.
DONE_MARKER = "stand-in-installer: installed, powering off"
NO_GRUB_MARKER = "stand-in-installer: no boot loader installed (as asked)"
ERROR_PREFIX = "stand-in-installer: ERROR:"
#: A login prompt on a serial console ("localhost login:").
LOGIN_PROMPT = re.compile(rb"\S+ login: ?$", re.MULTILINE)


def cache_home() -> Path:
    """This module's part of the test cache."""
    return fake_installer.cache_dir() / "debian-12"


# --- the template -------------------------------------------------------------------------------------------------

#: What the template's <file> and <command> leave in the installed system.
FILE_PATH = "/etc/imgfac-e2e/greeting.txt"
FILE_TEXT = "written by Image Factory's late_command"
COMMAND_RESULT = "/etc/imgfac-e2e/openssh-version"


def template(name: str, url: str, disk: str = "1536M") -> str:
    """A Debian 12 template installed from ``url``, with a package, a file and a command (it records a version)."""
    return (
        f"<template><name>{name}</name><description>a real Debian 12 system</description>"
        f"<os><name>Debian</name><version>12</version><arch>x86_64</arch>"
        f"<install type='url'><url>{url}</url></install><rootpw>e2e-Secret-pw</rootpw></os>"
        f"<disk><size>{disk}</size></disk>"
        f"<packages><package name='openssh-server'/></packages>"
        f"<files><file name='{FILE_PATH}'>{FILE_TEXT}</file></files>"
        f"<commands><command name='record'>dpkg-query -W -f='${{Version}}' openssh-server"
        f" &gt; {COMMAND_RESULT}</command></commands></template>"
    )


# --- the root file system ------------------------------------------------------------------------------------------


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (from its sources; never a name written here)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields = dict(re.findall(r"^(\S+):[ \t]*(.*)$", stanza, re.MULTILINE))
            if SUITE in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
                return fields["URIs"].split()[0]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 4 and words[0] == "deb" and words[2] == SUITE and "main" in words[3:]:
                return words[1]
    raise RuntimeError(f"apt has no source for Debian {SUITE} main on this machine")


@dataclass(frozen=True)
class RootFileSystem:
    """The cached Debian system: the unpacked tree (read, never booted) and its tarball."""

    tree: Path
    tarball: Path

    @property
    def kernel(self) -> Path:
        """The system's own kernel (``/boot/vmlinuz-*``)."""
        (found,) = self.tree.glob("boot/vmlinuz-*")
        return found

    @property
    def kernel_version(self) -> str:
        return self.kernel.name.removeprefix("vmlinuz-")

    def package_versions(self) -> dict[str, str]:
        """Installed package -> version, from the system's dpkg status."""
        return dpkg_versions((self.tree / "var/lib/dpkg/status").read_text())


def dpkg_versions(status: str) -> dict[str, str]:
    """Package name -> version of the installed packages in a dpkg ``status`` file."""
    versions = {}
    for stanza in status.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.MULTILINE))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            versions[fields["Package"]] = fields["Version"]
    return versions


@functools.cache
def root_filesystem() -> RootFileSystem:
    """The Debian 12 system, made once with debootstrap (about 2 minutes) and cached."""
    home = cache_home()
    stamp = home / STAMP
    if not stamp.exists() or stamp.read_text() != _stamp():
        _make_root_filesystem(home)
    return RootFileSystem(home / "root", home / "rootfs.tar")


def _stamp() -> str:
    """What the cached system was made from: a cache made otherwise is made again."""
    return f"{SUITE} minbase {' '.join(PACKAGES)}\n"


def _make_root_filesystem(home: Path) -> None:
    """debootstrap into ``home``.part, trim what no installed system keeps, pack it; rename when whole."""
    partial = home.with_name(home.name + ".part")
    _unmount_under(partial)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    root = partial / "root"
    made = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            "--components=main",
            SUITE,
            str(root),
            apt_mirror(),
        ],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        _unmount_under(partial)  # a failed debootstrap may leave /proc and /sys mounted in the tree
        raise RuntimeError(f"debootstrap failed ({made.returncode}):\n{made.stdout[-3000:]}{made.stderr[-3000:]}")
    # What debian-installer does not leave either: the downloaded .debs, apt's lists, this host's name.
    for leftover in (*root.glob("var/cache/apt/archives/*.deb"), *root.glob("var/lib/apt/lists/*_Packages")):
        leftover.unlink()
    (root / "etc/hostname").write_text("localhost\n")
    # Each installed system gets its own identity (the installer makes the host keys; systemd the id at boot).
    for key in root.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    # Numeric owners: busybox tar in the installer has no user database to map names with.
    subprocess.run(
        ["tar", "--numeric-owner", "--one-file-system", "-C", str(root), "-cf", str(partial / "rootfs.tar"), "."],
        check=True,
    )
    (partial / STAMP).write_text(_stamp())
    shutil.rmtree(home, ignore_errors=True)
    os.replace(partial, home)


def _unmount_under(folder: Path) -> None:
    """Unmount whatever is mounted inside ``folder`` (deepest first), so that removing it removes only files."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    inside = [point for point in mounts if point.startswith(f"{folder.resolve()}/")]
    for point in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


# --- the stand-in installer ----------------------------------------------------------------------------------------

#: busybox sh.  Placeholders: @ROOTFS@ (the tarball's path in the tree), @MODULES@ (insmod lines), @GRUB@ (1 or 0).
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /target /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
set -o pipefail
say() { echo "stand-in-installer: $*"; }
fail() {
    echo "stand-in-installer: ERROR: $*"
    # What debian-installer's text frontend prints under a question it cannot answer alone; then it waits.
    echo "Prompt: '?' for help"
    while true; do sleep 3600; done
}
# The value of a preseed question (backslash-continued lines joined), empty when the preseed has none.
answer() {
    awk -v key="$1" '{
        line = $0
        while (line ~ /\\$/ && (getline more) > 0) { sub(/\\$/, "", line); line = line more }
        if (split(line, word, /[ \t]+/) >= 3 && word[2] == key) {
            for (i = 0; i < 3; i++) sub(/^[ \t]*[^ \t]+/, "", line)
            sub(/^[ \t]/, "", line)
            print line
            exit
        }
    }' /preseed.cfg
}
say "started, kernel $(uname -r)"
[ -f /preseed.cfg ] || fail "no /preseed.cfg in the initrd"
@MODULES@
for _ in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
[ -b /dev/vda ] || fail "no /dev/vda"

say "configuring the network with DHCP"
ip link set lo up
ip link set eth0 up || fail "no network interface eth0"
udhcpc -i eth0 -q -n -t 10 -s /usr/share/udhcpc/default.script >/dev/null || fail "no DHCP answer on eth0"

say "partitioning /dev/vda"
# The system's own sfdisk and mke2fs, by full path: busybox has applets of those names in /sbin.
printf 'label: dos\nstart=2048, type=83, bootable\n' | /usr/sbin/sfdisk --quiet /dev/vda || fail "sfdisk failed"
for _ in $(seq 100); do [ -b /dev/vda1 ] && break; sleep 0.1; done
[ -b /dev/vda1 ] || fail "no /dev/vda1 after partitioning"
uuid=$(cat /proc/sys/kernel/random/uuid)
/usr/sbin/mke2fs -q -F -t ext4 -U "$uuid" /dev/vda1 || fail "mke2fs failed"
mount -t ext4 /dev/vda1 /target || fail "cannot mount /dev/vda1"

protocol=$(answer mirror/protocol)
host=$(answer mirror/${protocol:-http}/hostname)
folder=$(answer mirror/${protocol:-http}/directory)
[ -n "$host" ] || fail "the preseed names no mirror"
url="${protocol:-http}://$host${folder%/}/@ROOTFS@"
say "unpacking the root file system from $url"
wget -q -O - "$url" | tar -x -C /target || fail "cannot fetch and unpack $url"
for fs in dev proc sys; do mount --bind /$fs /target/$fs; done

missing=""
for package in $(answer pkgsel/include); do
    chroot /target dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q ' installed$' \
        || missing="$missing $package"
done
[ -z "$missing" ] || fail "this stand-in installer cannot install packages; not in the root file system:$missing"

say "configuring the system"
hash=$(answer passwd/root-password-crypted)
[ -z "$hash" ] || echo "root:$hash" | chroot /target chpasswd -e || fail "cannot set the root password"
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" > /target/etc/fstab
name=$(answer netcfg/get_hostname)
domain=$(answer netcfg/get_domain)
echo "${name:-debian}" > /target/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "${name:-debian}${domain:+.$domain} ${name:-debian}" > /target/etc/hosts
chroot /target ssh-keygen -A >/dev/null || fail "cannot make the SSH host keys"

if [ @GRUB@ = 1 ]; then
    options=$(answer debian-installer/add-kernel-opts)
    say "installing GRUB to /dev/vda, kernel options: $options"
    sed -i "s|^GRUB_CMDLINE_LINUX=.*|GRUB_CMDLINE_LINUX=\"$options\"|" /target/etc/default/grub
    # As debian-installer's grub-installer does: an install on a serial console gets GRUB on that console
    # (GRUB's default graphical terminal never reaches the kernel on a machine without a screen).
    serial=$(sed -n 's/.*console=\(ttyS[0-9][^ ]*\).*/\1/p' /proc/cmdline)
    if [ -n "$serial" ]; then
        unit=${serial#ttyS}
        speed=$(echo "$serial" | sed -n 's/^ttyS[0-9]*,\([0-9]*\).*/\1/p')
        printf 'GRUB_TERMINAL=serial\nGRUB_SERIAL_COMMAND="serial --unit=%s --speed=%s %s"\n' \
            "${unit%%,*}" "${speed:-9600}" "--word=8 --parity=no --stop=1" >> /target/etc/default/grub
    fi
    chroot /target grub-install --target=i386-pc /dev/vda || fail "grub-install failed"
    chroot /target update-grub || fail "update-grub failed"
else
    say "no boot loader installed (as asked)"
fi

late=$(answer preseed/late_command)
if [ -n "$late" ]; then
    say "running preseed/late_command"
    sh -c "$late" || fail "preseed/late_command exited with $?"
fi
sync
for fs in sys proc dev; do umount /target/$fs; done
umount /target || fail "cannot unmount /target"
say "installed, powering off"
poweroff -f
sleep 60
"""

#: debian-installer's helper: run a command in the installed system.
IN_TARGET = '#!/bin/sh\nexec chroot /target "$@"\n'

#: udhcpc's hook: configure the address and default route it was given.
UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
        [ -z "$router" ] || route add default gw "${router%% *}" dev "$interface"
        ;;
esac
exit 0
"""

#: Modules loaded when the kernel has them as modules (built in, nothing to do).
OPTIONAL_MODULES = ("crc32c_generic", "af_packet")


def initramfs_bytes(grub: bool = True) -> bytes:
    """The stand-in installer's initramfs (gzip-compressed newc) for the cached system's kernel."""
    return _initramfs(root_filesystem(), grub)


@functools.cache
def _initramfs(system: RootFileSystem, grub: bool) -> bytes:
    busybox = Path(fake_installer.BUSYBOX).read_bytes()
    if fake_installer._is_dynamic_elf(busybox):
        raise RuntimeError(f"{fake_installer.BUSYBOX} is dynamically linked: install busybox-static")
    modules = module_load_order(system.tree, system.kernel_version, MODULES, OPTIONAL_MODULES)
    insmods = "\n".join(
        f"insmod /lib/modules/{path.name.removesuffix('.xz')} || fail 'insmod {path.name} failed'" for path in modules
    )
    script = (
        INIT_SCRIPT.replace("@ROOTFS@", ROOTFS_IN_TREE)
        .replace("@MODULES@", insmods)
        .replace("@GRUB@", "1" if grub else "0")
    )
    files: dict[str, tuple[bytes, bool]] = {
        "init": (script.encode(), True),
        "bin/busybox": (busybox, True),
        "bin/in-target": (IN_TARGET.encode(), True),
        "usr/share/udhcpc/default.script": (UDHCPC_SCRIPT.encode(), True),
        "etc/mke2fs.conf": ((system.tree / "etc/mke2fs.conf").read_bytes(), False),
    }
    for path in modules:
        data = path.read_bytes()
        files[f"lib/modules/{path.name.removesuffix('.xz')}"] = (
            lzma.decompress(data) if path.suffix == ".xz" else data,
            False,
        )
    for inside in borrowed_files(system.tree, BORROWED):
        files[inside.lstrip("/")] = ((system.tree / inside.lstrip("/")).resolve().read_bytes(), True)
    entries = [char_device("dev/console", 5, 1)]
    entries += [directory(name) for name in _parents(files)]
    entries += [regular(name, data, executable) for name, (data, executable) in sorted(files.items())]
    return gzip.compress(newc_archive(_in_order(entries)), compresslevel=6, mtime=0)


def _parents(files: Iterable[str]) -> set[str]:
    """Every folder above ``files``, plus the ones /init expects."""
    folders = {"dev", "proc", "sys", "tmp"}
    for name in files:
        parts = name.split("/")[:-1]
        folders.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return folders


def _in_order(entries: list[Entry]) -> list[Entry]:
    """Folders before what is in them (the kernel unpacks the archive front to back)."""
    return sorted(entries, key=lambda entry: (entry.name.count("/"), entry.mode & 0o170000 != 0o040000, entry.name))


def borrowed_files(tree: Path, programs: Iterable[str]) -> set[str]:
    """``programs`` and the shared libraries (and loader) they need, as paths inside ``tree``.

    Resolved by the system's own ``ldd``, run in a chroot: the libraries are the system's, not this host's.
    """
    needed = set(programs)
    for program in programs:
        listing = subprocess.run(
            ["chroot", str(tree), "/usr/bin/ldd", program], check=True, capture_output=True, text=True
        ).stdout
        needed.update(re.findall(r"(/\S+) \(0x", listing))
    return needed


def module_load_order(tree: Path, version: str, wanted: Iterable[str], optional: Iterable[str] = ()) -> list[Path]:
    """The module files to insmod, each after what it depends on (from ``modules.dep``).

    A wanted module the kernel has built in needs nothing; one it has neither built in nor as a module is an error.
    """
    home = tree / "lib/modules" / version
    depends: dict[str, list[str]] = {}
    for line in (home / "modules.dep").read_text().splitlines():
        module, _, requires = line.partition(":")
        depends[module] = requires.split()
    by_name = {_module_name(path): path for path in depends}
    builtin = {_module_name(path) for path in (home / "modules.builtin").read_text().split()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for requirement in depends[path]:
            visit(requirement)
        order.append(path)

    for name in (*wanted, *optional):
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin and name not in optional:
            raise RuntimeError(f"kernel {version} has no module {name}")
    return [home / path for path in order]


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


# --- the install tree ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallTree:
    """A folder laid out as a Debian mirror holding the stand-in installer and the root file system."""

    root: Path
    system: RootFileSystem


def installer_kernel(system: RootFileSystem) -> Path:
    """The system's own kernel, uncompressed when QEMU can boot it directly (seconds less per emulated boot)."""
    return fake_installer._uncompressed(system.kernel, cache_home() / "vmlinux") or system.kernel


def lay_out_tree(root: Path, grub: bool = True) -> InstallTree:
    """Kernel and initrd at the netboot paths the Debian plug-in reads without ``.treeinfo``; the tarball."""
    system = root_filesystem()
    for path in (fake_installer.DEBIAN_KERNEL, ROOTFS_IN_TREE):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
    fake_installer._link_or_copy(installer_kernel(system), root / fake_installer.DEBIAN_KERNEL)
    (root / fake_installer.DEBIAN_INITRD).write_bytes(initramfs_bytes(grub))
    fake_installer._link_or_copy(system.tarball, root / ROOTFS_IN_TREE)
    return InstallTree(root, system)


def serve(root: Path) -> fake_installer.TreeServer:
    """The tree over HTTP on 127.0.0.1 (a tree without ``.treeinfo``: that path answers 404)."""
    return fake_installer.serve_tree(root)


# --- booting by hand -----------------------------------------------------------------------------------------------

QEMU = "qemu-system-x86_64"
#: The machine the checks boot: PEERS.md's (software emulation, 2 vCPUs, 1 GiB).
CPUS = 2
MEMORY_MIB = 1024


def qemu_argv(
    disk: Path,
    disk_format: str,
    console: Path,
    *,
    snapshot: bool = True,
    cpus: int = CPUS,
    memory_mib: int = MEMORY_MIB,
    boot: tuple[Path, Path, str] | None = None,
) -> list[str]:
    """QEMU under software emulation with ``disk`` on virtio, user networking and the serial console in a file.

    No screen (as the factory's boot test): an image must boot on its serial console alone.
    ``boot`` is (kernel, initrd, command line) to boot a kernel directly; else the disk's boot loader runs.
    ``snapshot`` keeps every write in a throwaway overlay: the image is read, never changed.
    """
    argv = [
        QEMU,
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        str(cpus),
        "-m",
        str(memory_mib),
        "-vga",
        "none",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{console}",
        "-drive",
        f"file={disk},format={disk_format},if=virtio,cache=unsafe",
        "-nic",
        "user,model=virtio-net-pci",
    ]
    if snapshot:
        argv.append("-snapshot")
    if boot is not None:
        kernel, initrd, cmdline = boot
        argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]
    return argv


class BootFailed(AssertionError):
    """A VM did not do what it was started for; carries its console's last lines."""


def console_tail(console: Path, lines: int = 25) -> str:
    text = console.read_bytes().decode("utf-8", "replace") if console.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def boot_to_login(disk: Path, disk_format: str, console: Path, timeout: float = 300.0, **options) -> float:
    """Boot ``disk`` (read-only) until a login prompt shows on its serial console; the seconds it took."""
    started = time.monotonic()
    with subprocess.Popen(
        qemu_argv(disk, disk_format, console, snapshot=True, **options),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as qemu:
        try:
            while time.monotonic() - started < timeout:
                if console.exists() and LOGIN_PROMPT.search(console.read_bytes()):
                    return time.monotonic() - started
                if qemu.poll() is not None:
                    raise BootFailed(
                        f"QEMU exited ({qemu.returncode}) before a login prompt: "
                        f"{qemu.stderr.read().decode(errors='replace')}\n{console_tail(console)}"
                    )
                time.sleep(0.5)
            raise BootFailed(f"no login prompt on {disk} within {timeout:g} s:\n{console_tail(console)}")
        finally:
            if qemu.poll() is None:
                qemu.kill()


def run_installer(
    disk: Path,
    preseed_cfg: str,
    kernel: Path,
    initrd: Path,
    console: Path,
    cmdline: str,
    timeout: float = 900.0,
    **options,
) -> float:
    """Boot the installer on ``disk`` (written) with ``preseed_cfg`` appended to its initrd; the seconds it ran.

    BootFailed unless it powered off after its last step.
    """
    with tempfile.TemporaryDirectory() as scratch:
        with_answers = Path(scratch) / "initrd.gz"
        with_answers.write_bytes(fake_installer.append_member(initrd.read_bytes(), "preseed.cfg", preseed_cfg.encode()))
        started = time.monotonic()
        argv = qemu_argv(disk, "raw", console, snapshot=False, boot=(kernel, with_answers, cmdline), **options)
        try:
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout, check=True)
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as error:
            raise BootFailed(f"the installer did not finish: {error}\n{console_tail(console)}") from None
    took = time.monotonic() - started
    if DONE_MARKER not in console.read_bytes().decode("utf-8", "replace"):
        raise BootFailed(f"the installer powered off without finishing:\n{console_tail(console)}")
    return took
