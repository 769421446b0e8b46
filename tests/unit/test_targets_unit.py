"""Target plug-ins without real processes: argument building, progress parsing, checks, clean-up.

qemu-img and tar are played by ``FakeTools``, a stand-in for ``run_process``
that records each command line and writes small files where the real tools
would write images.  Progress parsing goes through the real ``run_process``
with a fake reactor whose "process" prints scripted output.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lxml import etree
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imgfac_twisted.jobs.work import discard_path, file_artifact
from imgfac_twisted.processes import ProcessFailed, ProcessResult, run_process
from imgfac_twisted.targets import archives, disk_archives, disk_image, ovf, qemu
from imgfac_twisted.targets.archives import Member
from imgfac_twisted.targets.disk_formats import make_target
from imgfac_twisted.targets.disk_image import ProgressBand
from imgfac_twisted.targets.qemu import ConversionFailed, ImageCheckFailed, ImageInfo, QemuImg
from imgfac_twisted.template import parse_template
from imgfac_twisted.testing import result_of

MIB = 1024**2
SIZE = 4 * MIB
TEMPLATE = (
    "<template><name>mocky</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<description>m</description></template>"
)
OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"


# -- fakes ----------------------------------------------------------------------


class FakeJob:
    """A BuildJob on a tmp directory: progress and log lines are kept, the base image is a sparse file."""

    def __init__(self, root: Path, base_size: int = SIZE) -> None:
        self.builder = SimpleNamespace(id="builder-1")
        self.template = parse_template(TEMPLATE)
        self.work_dir = str(root / "builder")
        os.makedirs(self.work_dir)
        self.reactor = Clock()
        # Work "on the disk door" runs inline here, so its calls back come on this thread.
        self.reactor.callFromThread = lambda fn, *args: fn(*args)  # type: ignore[attr-defined]
        self.base = str(root / "base.raw")
        with open(self.base, "wb") as stream:
            stream.truncate(base_size)
        self.progressed: list[int] = []
        self.lines: list[str] = []

    def base_image(self) -> Deferred:
        return succeed(self.base)

    def artifact(self, path: str) -> Deferred:
        return succeed(file_artifact(path))

    def discard(self, path: str) -> Deferred:
        return succeed(discard_path(path))

    def on_disk(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        try:
            return succeed(fn(*args))
        except Exception:
            return fail()

    def log(self, message: str) -> Deferred:
        self.lines.append(message)
        return succeed(None)

    def progress(self, percent: int) -> Deferred:
        self.progressed.append(percent)
        return succeed(None)

    def leftovers(self) -> list[str]:
        """Everything in the builder's directory."""
        return sorted(os.listdir(self.work_dir))


#: What a qemu-img option makes ``qemu-img info`` show in ``format-specific.data``.
SPECIFIC_OF_OPTION = {
    "compat=0.10": {"compat": "0.10"},
    "subformat=streamOptimized": {"create-type": "streamOptimized"},
}


class FakeTools:
    """Plays qemu-img and tar for ``run_process``'s callers; ``fail``/``hang`` pick commands to break."""

    def __init__(self, base: str, base_size: int) -> None:
        self.calls: list[list[str]] = []
        #: What ``qemu-img info`` answers, by path: (format, virtual size, format-specific data).
        self.images: dict[str, tuple[str, int, dict[str, Any]]] = {base: ("raw", base_size, {})}
        self.archives: dict[str, list[tuple[str, int]]] = {}
        self.fail: Callable[[list[str]], bool] = lambda argv: False
        self.hang: Callable[[list[str]], bool] = lambda argv: False
        self.killed: list[list[str]] = []

    def __call__(
        self, reactor: Any, argv: list[str], *, timeout: float, on_line: Any = None, env: dict[str, str] | None = None
    ) -> Deferred:
        self.calls.append(argv)
        assert timeout > 0 and env is not None and env["LC_ALL"] == "C"
        output = getattr(self, "_" + os.path.basename(argv[0]).replace("-", "_"))(argv, on_line or (lambda _: None))
        if self.hang(argv):
            return Deferred(lambda _: self.killed.append(argv))
        if self.fail(argv):
            return fail(ProcessFailed(f"{os.path.basename(argv[0])} exited with status 1: disk full"))
        return succeed(ProcessResult(output))

    def _qemu_img(self, argv: list[str], on_line: Callable[[str], None]) -> str:
        command = argv[1]
        if command == "info":
            # A file made some other way (the hard-linked disk.raw) reads as raw.
            image_format, virtual_size, specific = self.images.get(argv[-1], ("raw", os.path.getsize(argv[-1]), {}))
            return json.dumps(
                {
                    "format": image_format,
                    "virtual-size": virtual_size,
                    "actual-size": 4096,
                    "format-specific": {"type": image_format, "data": specific},
                }
            )
        specific = {
            key: value
            for option in argv
            if option in SPECIFIC_OF_OPTION
            for key, value in SPECIFIC_OF_OPTION[option].items()
        }
        image_format = argv[argv.index("-O" if command == "convert" else "-f") + 1]
        if command == "create":
            size = int(argv[-1])
            write(argv[-2], size + (512 if image_format == "vpc" else 0))
            self.images[argv[-2]] = (image_format, size, specific)
            return ""
        source, target = argv[-2], argv[-1]
        if "-n" not in argv:
            # A raw copy is as large as its source (sparse); anything else, a token 1000 bytes.
            write(target, self.images[source][1] if image_format == "raw" else 1000)
            self.images[target] = (image_format, self.images[source][1], specific)
        for line in ("    (0.00/100%)", "    (50.00/100%)", "    (100.00/100%)"):
            on_line(line)
        return ""

    def _tar(self, argv: list[str], on_line: Callable[[str], None]) -> str:
        archive = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--file="))
        if "--list" in argv:
            return "\n".join(f"-rw-r--r-- 0/0 {size} 2026-01-01 00:00 {name}" for name, size in self.archives[archive])
        directory = argv[argv.index("--directory") + 1]
        names = argv[argv.index("--") + 1 :]
        write(archive, 2048)
        self.archives[archive] = [(name, os.path.getsize(os.path.join(directory, name))) for name in names]
        on_line("tar: imgfac-checkpoint 1")
        return ""


def write(path: str, size: int) -> None:
    with open(path, "wb") as stream:
        stream.write(b"x")
        stream.truncate(size)


@pytest.fixture(autouse=True)
def tools_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-img and tar resolve to fixed paths, installed or not."""
    monkeypatch.setattr(qemu.shutil, "which", lambda name: f"/usr/bin/{name}")


def setup(tmp_path: Path, target: str, base_size: int = SIZE) -> tuple[FakeJob, FakeTools, Any]:
    job = FakeJob(tmp_path, base_size)
    tools = FakeTools(job.base, base_size)
    return job, tools, make_target(target, run=tools)


def shapes(calls: list[list[str]], root: Path) -> list[list[str]]:
    """Command lines with the test's directories cut off the paths."""
    prefix = re.compile(re.escape(str(root)) + r"(/[^/=\s]+)*/")
    return [[prefix.sub("", arg) for arg in argv] for argv in calls]


# -- argument building ---------------------------------------------------------------

INFO_BASE = ["/usr/bin/qemu-img", "info", "--output=json", "-f", "raw", "base.raw"]
CONVERT = ["/usr/bin/qemu-img", "convert", "-p", "-f", "raw"]
TAR = "/usr/bin/tar"
TAR_OPTIONS = [
    "--checkpoint=1000",
    "--checkpoint-action=echo=imgfac-checkpoint %u",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
]

#: Every tool run of each target's build, in order (paths cut to their last part).
EXPECTED_COMMANDS = {
    "ec2": [INFO_BASE, ["/usr/bin/qemu-img", "info", "--output=json", "-f", "raw", "mocky-ec2.raw"]],
    "openstack-kvm": [
        INFO_BASE,
        CONVERT + ["-O", "qcow2", "base.raw", "mocky-openstack-kvm.qcow2"],
        ["/usr/bin/qemu-img", "info", "--output=json", "-f", "qcow2", "mocky-openstack-kvm.qcow2"],
    ],
    "rhevm": [
        INFO_BASE,
        CONVERT + ["-O", "qcow2", "-o", "compat=0.10", "base.raw", "mocky-rhevm.qcow2"],
        ["/usr/bin/qemu-img", "info", "--output=json", "-f", "qcow2", "mocky-rhevm.qcow2"],
    ],
    "vsphere": [
        INFO_BASE,
        CONVERT + ["-O", "vmdk", "-o", "subformat=streamOptimized", "base.raw", "mocky-vsphere.vmdk"],
        ["/usr/bin/qemu-img", "info", "--output=json", "-f", "vmdk", "mocky-vsphere.vmdk"],
    ],
    "hyperv": [
        INFO_BASE,
        [
            "/usr/bin/qemu-img",
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=fixed,force_size=on",
            "mocky-hyperv.vhd",
            str(SIZE),
        ],
        CONVERT + ["-O", "vpc", "-n", "--target-is-zero", "base.raw", "mocky-hyperv.vhd"],
        ["/usr/bin/qemu-img", "info", "--output=json", "-f", "vpc", "mocky-hyperv.vhd"],
    ],
    "ova": [
        INFO_BASE,
        CONVERT + ["-O", "vmdk", "-o", "subformat=streamOptimized", "base.raw", "mocky-disk1.vmdk"],
        ["/usr/bin/qemu-img", "info", "--output=json", "-f", "vmdk", "mocky-disk1.vmdk"],
        [
            TAR,
            "--format=ustar",
            "--create",
            "--file=mocky-ova.ova",
            *TAR_OPTIONS,
            "--directory",
            "staging",
            "--",
            "mocky.ovf",
            "mocky-disk1.vmdk",
        ],
        [TAR, "--list", "--verbose", "--numeric-owner", "--file=mocky-ova.ova"],
    ],
    "gce": [
        INFO_BASE,
        ["/usr/bin/qemu-img", "info", "--output=json", "-f", "raw", "disk.raw"],
        [
            TAR,
            "--format=oldgnu",
            "--create",
            "--file=mocky-gce.tar.gz",
            *TAR_OPTIONS,
            "--sparse",
            "--gzip",
            "--directory",
            "staging",
            "--",
            "disk.raw",
        ],
        [TAR, "--list", "--verbose", "--numeric-owner", "--gzip", "--file=mocky-gce.tar.gz"],
    ],
}

FINAL_NAMES = {
    "ec2": "mocky-ec2.raw",
    "openstack-kvm": "mocky-openstack-kvm.qcow2",
    "rhevm": "mocky-rhevm.qcow2",
    "vsphere": "mocky-vsphere.vmdk",
    "hyperv": "mocky-hyperv.vhd",
    "ova": "mocky-ova.ova",
    "gce": "mocky-gce.tar.gz",
}


@pytest.mark.parametrize("target", sorted(EXPECTED_COMMANDS))
def test_each_target_runs_the_right_commands(tmp_path: Path, target: str) -> None:
    """The exact qemu-img and tar command lines of each target, and its one final file."""
    job, tools, plugin = setup(tmp_path, target)
    artifact = result_of(plugin.build(job))
    assert shapes(tools.calls, tmp_path) == EXPECTED_COMMANDS[target]
    assert artifact.path == os.path.join(job.work_dir, FINAL_NAMES[target])
    assert job.leftovers() == [FINAL_NAMES[target]], "the staging directory is gone"
    assert job.progressed[-1] == 100 and job.progressed == sorted(set(job.progressed))
    assert all(50 < value <= 100 for value in job.progressed)


def test_tar_create_arguments() -> None:
    assert archives.create_args(
        "tar", "/a/x.tar.gz", "/a", ["disk.raw"], tar_format="oldgnu", gzip=True, sparse=True
    ) == [
        "tar",
        "--format=oldgnu",
        "--create",
        "--file=/a/x.tar.gz",
        *TAR_OPTIONS,
        "--sparse",
        "--gzip",
        "--directory",
        "/a",
        "--",
        "disk.raw",
    ]


def test_qemu_arguments() -> None:
    assert qemu.convert_args("qemu-img", "in", "raw", "out", "qcow2", {"compat": "0.10"}) == [
        "qemu-img",
        "convert",
        "-p",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "compat=0.10",
        "in",
        "out",
    ]
    assert qemu.info_args("qemu-img", "x.vhd", "vpc") == ["qemu-img", "info", "--output=json", "-f", "vpc", "x.vhd"]
    assert qemu.options_args({}) == []
    with pytest.raises(ValueError):
        qemu.options_args({"subformat": "fixed,size=1"})


def test_timeouts_grow_with_the_image() -> None:
    assert qemu.timeout_for(0) == qemu.BASE_TIMEOUT
    assert qemu.timeout_for(10 * qemu.GIB) == qemu.BASE_TIMEOUT + 10 * qemu.TIMEOUT_PER_GIB
    assert qemu.timeout_for(qemu.GIB + 1) == qemu.BASE_TIMEOUT + 2 * qemu.TIMEOUT_PER_GIB


def test_ova_tar_format() -> None:
    """ustar, as the OVF standard asks, unless a member is too large for its header."""
    assert archives.ova_format(archives.USTAR_MAX_MEMBER - 1) == "ustar"
    assert archives.ova_format(archives.USTAR_MAX_MEMBER) == "posix"


def test_hyperv_rounds_up_to_a_whole_mib(tmp_path: Path) -> None:
    """A base image of 3 MiB + 100 bytes makes a fixed VHD of 4 MiB (and says so in the log)."""
    job, tools, plugin = setup(tmp_path, "hyperv", 3 * MIB + 100)
    artifact = result_of(plugin.build(job))
    create = next(argv for argv in tools.calls if argv[1] == "create")
    assert create[-1] == str(4 * MIB)
    assert os.path.getsize(artifact.path) == 4 * MIB + 512
    assert any("rounded up from 3145828 to 4194304" in line for line in job.lines)


def test_the_log_tells_the_commands_durations_and_checks(tmp_path: Path) -> None:
    job, _, plugin = setup(tmp_path, "rhevm")
    result_of(plugin.build(job))
    text = "\n".join(job.lines)
    assert "converting to qcow2: /usr/bin/qemu-img convert -p -f raw -O qcow2 -o compat=0.10" in text
    assert "converting to qcow2: done in" in text
    assert f"checked mocky-rhevm.qcow2: qcow2, virtual size {SIZE} bytes, compat 0.10" in text
    assert re.search(r"mocky-rhevm.qcow2: 1000 bytes, sha256 [0-9a-f]{64}", text)


# -- progress ---------------------------------------------------------------------


class ScriptedProcess:
    """The process transport of ProcessReactor: remembers the signals it got."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)


class ProcessReactor(Clock):
    """A Clock whose spawnProcess starts nothing: the test plays the process through its protocol."""

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None, **_: Any) -> Any:
        self.protocol, self.args = protocol, args
        self.process = ScriptedProcess()
        protocol.makeConnection(self.process)
        return self.process


def test_parse_progress() -> None:
    assert qemu.parse_progress("    (12.34/100%)") == 12.34
    assert qemu.parse_progress("    (100/100%)") == 100.0
    assert qemu.parse_progress("qemu-img: warning: something") is None
    assert qemu.parse_progress("(12.34/100%) and more") is None


def test_progress_of_scripted_qemu_img_output(tmp_path: Path) -> None:
    """qemu-img's \\r-redrawn progress, split anywhere, moves completed from 50 to 100 in whole steps."""
    job = FakeJob(tmp_path)
    reactor = ProcessReactor()
    tool = QemuImg(reactor, job.log, run_process, executable="qemu-img")
    done = ensureDeferred(
        tool.convert("in", "raw", "out", "qcow2", {}, size=SIZE, on_progress=ProgressBand(job, 50, 100))
    )
    output = b"    (0.00/100%)\r    (12.50/100%)\r    (12.80/100%)\r    (100.00/100%)\r"
    for piece in (output[:9], output[9:30], output[30:]):
        reactor.protocol.childDataReceived(2, piece)
    reactor.protocol.processEnded(Failure(ProcessDone(0)))
    result_of(done)
    assert job.progressed == [56, 100]
    assert [call.getTime() for call in reactor.getDelayedCalls()] == [], "the timeout was cancelled"


def test_conversion_timeout_kills_the_tool(tmp_path: Path) -> None:
    """Past timeout_for(size) seconds qemu-img gets SIGTERM; the conversion fails saying so."""
    job = FakeJob(tmp_path)
    reactor = ProcessReactor()
    done = ensureDeferred(
        QemuImg(reactor, job.log, run_process, executable="qemu-img").convert("in", "raw", "out", "vmdk", {}, size=SIZE)
    )
    reactor.advance(qemu.timeout_for(SIZE))
    assert reactor.process.signals == [signal.SIGTERM]
    reactor.protocol.processEnded(Failure(ProcessTerminated(signal=signal.SIGTERM)))
    with pytest.raises(ConversionFailed, match="converting to vmdk failed: qemu-img ran longer than"):
        result_of(done)


def test_progress_band_reports_each_new_percent_once(tmp_path: Path) -> None:
    job = FakeJob(tmp_path)
    band = ProgressBand(job, 90, 100)
    for percent in (0, 5, 9.9, 10, 10.5, 50, 40, 150):
        band(percent)
    assert job.progressed == [91, 95, 100]


def test_late_progress_lines_are_ignored(tmp_path: Path) -> None:
    """A cancelled tool may print on until it dies: those lines no longer move the builder."""
    job = FakeJob(tmp_path)
    reactor = ProcessReactor()
    done = ensureDeferred(
        QemuImg(reactor, job.log, run_process, executable="qemu-img").convert(
            "in", "raw", "out", "qcow2", {}, size=SIZE, on_progress=ProgressBand(job, 50, 100)
        )
    )
    done.cancel()
    assert reactor.process.signals == [signal.SIGTERM]
    reactor.protocol.childDataReceived(2, b"    (80.00/100%)\r")
    assert job.progressed == []
    with pytest.raises(CancelledError):
        result_of(done)


def test_tar_checkpoints_give_progress() -> None:
    assert archives.checkpoint_bytes("tar: imgfac-checkpoint 3") == 3 * 1000 * 10240
    assert archives.checkpoint_bytes("tar: something else") is None


# -- checks ----------------------------------------------------------------------

QCOW2_INFO = json.dumps(
    {
        "virtual-size": SIZE,
        "filename": "x.qcow2",
        "format": "qcow2",
        "actual-size": 200704,
        "format-specific": {"type": "qcow2", "data": {"compat": "0.10", "refcount-bits": 16}},
        "dirty-flag": False,
    },
    indent=4,
)


def test_parse_info() -> None:
    info = qemu.parse_info(QCOW2_INFO, "x.qcow2")
    assert info == ImageInfo(
        format="qcow2", virtual_size=SIZE, actual_size=200704, specific={"compat": "0.10", "refcount-bits": 16}
    )
    assert qemu.parse_info("qemu-img: warning: hmm\n" + QCOW2_INFO, "x").format == "qcow2", "stderr noise is skipped"


@pytest.mark.parametrize(
    "output", ["", "not json", "{}", '{"format": "raw"}', '{"virtual-size": "1", "format": "raw"}']
)
def test_parse_info_refuses_what_is_no_description(output: str) -> None:
    with pytest.raises(ImageCheckFailed, match="no usable description"):
        qemu.parse_info(output, "x.img")


def test_check_info_names_every_difference() -> None:
    info = qemu.parse_info(QCOW2_INFO, "x.qcow2")
    qemu.check_info(info, "x.qcow2", "qcow2", SIZE, {"compat": "0.10"})
    with pytest.raises(ImageCheckFailed) as raised:
        qemu.check_info(info, "/d/x.qcow2", "vmdk", SIZE + 1, {"compat": "1.1"})
    message = raised.value.message
    assert "x.qcow2" in message and "format qcow2, not vmdk" in message
    assert f"virtual size {SIZE} bytes, not {SIZE + 1}" in message and "compat '0.10', not '1.1'" in message


@pytest.mark.parametrize(
    "target, wrong",
    [
        ("openstack-kvm", ("vmdk", SIZE, {})),
        ("rhevm", ("qcow2", SIZE, {"compat": "1.1"})),
        ("vsphere", ("vmdk", SIZE, {"create-type": "monolithicSparse"})),
        ("ec2", ("raw", SIZE - 512, {})),
    ],
)
def test_a_wrong_image_fails_the_build_and_is_removed(tmp_path: Path, target: str, wrong: tuple) -> None:
    """qemu-img info disagreeing with what was meant fails the build; no image is left."""
    job, tools, plugin = setup(tmp_path, target)
    original = tools._qemu_img

    def misreport(argv: list[str], on_line: Any) -> str:
        if argv[1] == "info" and not argv[-1].endswith("base.raw"):
            tools.images[argv[-1]] = wrong
        return original(argv, on_line)

    tools._qemu_img = misreport  # type: ignore[method-assign]
    with pytest.raises(ImageCheckFailed, match="is not the image meant"):
        result_of(plugin.build(job))
    assert job.leftovers() == []


def test_a_fixed_vhd_must_have_its_footer_only(tmp_path: Path) -> None:
    path = tmp_path / "x.vhd"
    write(str(path), MIB + 512)
    disk_image.check_fixed_vhd(str(path), MIB)
    with pytest.raises(ImageCheckFailed, match="is 1049088 bytes: a fixed VHD of 2097152 bytes takes 2097664"):
        disk_image.check_fixed_vhd(str(path), 2 * MIB)


def test_archive_listing() -> None:
    listing = (
        "-rw-r--r-- 0/0      1073741824 2026-11-22 22:02 disk.raw\n"
        "-rw-r--r-- 0/0            2823 2026-11-22 22:02 my image.ovf"
    )
    assert archives.parse_listing(listing) == [Member("disk.raw", 1073741824), Member("my image.ovf", 2823)]
    with pytest.raises(ImageCheckFailed, match="unexpected line"):
        archives.parse_listing("tar: Removing leading `/' from member names")
    assert archives.parse_listing("hrw-r--r-- 0/0 0 2026-11-22 22:02 a link to b")[0].regular is False


def test_archive_members_must_be_exactly_the_ones_meant() -> None:
    meant = [Member("a.ovf", 10), Member("a.vmdk", 20)]
    archives.check_members("x.ova", list(meant), meant)
    for wrong in ([meant[1], meant[0]], meant + [Member("extra", 1)], [meant[0]], [meant[0], Member("a.vmdk", 21)]):
        with pytest.raises(ImageCheckFailed, match="it must hold exactly a.ovf"):
            archives.check_members("x.ova", wrong, meant)


def test_an_archive_with_other_members_fails_the_build(tmp_path: Path) -> None:
    job, tools, plugin = setup(tmp_path, "gce")
    original = tools._tar

    def extra_member(argv: list[str], on_line: Any) -> str:
        output = original(argv, on_line)
        if "--create" in argv:
            archive = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--file="))
            tools.archives[archive].append(("evil", 1))
        return output

    tools._tar = extra_member  # type: ignore[method-assign]
    with pytest.raises(ImageCheckFailed, match="holds disk.raw .*evil"):
        result_of(plugin.build(job))
    assert job.leftovers() == []


# -- failure and cancellation leave nothing -------------------------------------------

#: The targets that run a tool to make their image (ec2's is a copy on the disk door).
CONVERTING = sorted(set(EXPECTED_COMMANDS) - {"ec2"})


@pytest.mark.parametrize("target", CONVERTING)
def test_a_failed_conversion_removes_the_partial_image(tmp_path: Path, target: str) -> None:
    """The tool writes half an image, then fails: the build fails saying so, and nothing is left."""
    job, tools, plugin = setup(tmp_path, target)
    tools.fail = lambda argv: argv[1] == "convert" or "--create" in argv
    with pytest.raises(ConversionFailed, match="failed: .* exited with status 1: disk full"):
        result_of(plugin.build(job))
    assert job.leftovers() == []
    assert os.path.exists(job.base), "the shared base image is untouched"


@pytest.mark.parametrize("target", CONVERTING)
def test_a_cancelled_conversion_is_killed_and_removed(tmp_path: Path, target: str) -> None:
    """Cancelling the build cancels the running tool (run_process then kills it) and removes its output."""
    job, tools, plugin = setup(tmp_path, target)
    tools.hang = lambda argv: argv[1] == "convert" or "--create" in argv
    building = plugin.build(job)
    assert not building.called and len(tools.killed) == 0
    building.cancel()
    with pytest.raises(CancelledError):
        result_of(building)
    assert len(tools.killed) == 1
    assert job.leftovers() == []


def test_ec2_is_a_sparse_copy_hashed_on_the_disk_door(tmp_path: Path) -> None:
    """ec2: no tool converts; the base image's bytes arrive, the Artifact's hash is theirs, progress 50..100."""
    job, tools, plugin = setup(tmp_path, "ec2")
    with open(job.base, "r+b") as stream:
        stream.seek(MIB + 3)
        stream.write(b"data in the middle")
    copies: list[Any] = []
    inline = job.on_disk
    job.on_disk = lambda fn, *args: copies.append(fn) or inline(fn, *args)  # type: ignore[method-assign]
    artifact = result_of(plugin.build(job))
    assert [fn.__name__ for fn in copies] == ["copy_hashed"]
    assert not any(argv[1] == "convert" for argv in tools.calls)
    with open(job.base, "rb") as base, open(artifact.path, "rb") as made:
        assert made.read() == base.read()
    assert artifact.sha256 == file_artifact(artifact.path).sha256
    assert job.progressed[0] > 50 and job.progressed[-1] == 100


def test_a_cancelled_ec2_copy_is_told_to_stop_and_removed(tmp_path: Path) -> None:
    """The copy's thread cannot be interrupted: cancelling sets its stop flag, stops waiting, cleans up."""
    job, tools, plugin = setup(tmp_path, "ec2")
    stops: list[Any] = []
    job.on_disk = lambda fn, *args: stops.append(args[-1]) or Deferred()  # type: ignore[method-assign]
    building = plugin.build(job)
    assert not building.called and not stops[0].is_set()
    building.cancel()
    with pytest.raises(CancelledError):
        result_of(building)
    assert stops[0].is_set()
    assert job.leftovers() == []


def test_a_failed_check_of_the_base_image_fails_the_build(tmp_path: Path) -> None:
    job, tools, plugin = setup(tmp_path, "ec2")
    tools.fail = lambda argv: argv[1] == "info"
    with pytest.raises(ImageCheckFailed, match="qemu-img cannot read base.raw as raw"):
        result_of(plugin.build(job))


def test_a_missing_tool_is_named_with_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None)
    job, _, plugin = setup(tmp_path, "vsphere")
    with pytest.raises(ConversionFailed, match="qemu-img is not installed .*qemu-utils"):
        result_of(plugin.build(job))


def test_gce_copies_the_base_image_when_it_cannot_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across file systems no hard link: the base image is copied sparsely by qemu-img (progress 50..60)."""

    def no_link(source: str, target: str) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(disk_archives.os, "link", no_link)
    job, tools, plugin = setup(tmp_path, "gce")
    result_of(plugin.build(job))
    assert shapes(tools.calls, tmp_path)[1] == CONVERT + ["-O", "raw", "base.raw", "disk.raw"]
    assert job.progressed[:2] == [50 + 5, 60]
    assert any("Invalid cross-device link" in line for line in job.lines)


# -- the OVF descriptor ---------------------------------------------------------------


def test_ovf_descriptor() -> None:
    """Well-formed OVF 1.0: the file reference (name, size), the disk (capacity, format) and its hardware."""
    document = etree.fromstring(ovf.descriptor("my <vm>", "Mock 1 x86_64", "disk1.vmdk", 12345, 2 * 1024**3))
    ns = {"ovf": OVF_NS, "rasd": RASD_NS}
    attr = lambda element, name: element.get(f"{{{OVF_NS}}}{name}")  # noqa: E731
    assert document.tag == f"{{{OVF_NS}}}Envelope"
    assert [child.tag.split("}")[1] for child in document] == ["References", "DiskSection", "VirtualSystem"]
    reference = document.find("ovf:References/ovf:File", ns)
    assert (attr(reference, "href"), attr(reference, "size")) == ("disk1.vmdk", "12345")
    disk = document.find("ovf:DiskSection/ovf:Disk", ns)
    assert attr(disk, "capacity") == str(2 * 1024**3) and attr(disk, "capacityAllocationUnits") == "byte"
    assert attr(disk, "fileRef") == attr(reference, "id")
    assert attr(disk, "format") == "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
    system = document.find("ovf:VirtualSystem", ns)
    assert attr(system, "id") == "my <vm>" and system.findtext("ovf:Name", namespaces=ns) == "my <vm>"
    assert system.findtext("ovf:OperatingSystemSection/ovf:Description", namespaces=ns) == "Mock 1 x86_64"
    items = system.findall("ovf:VirtualHardwareSection/ovf:Item", ns)
    by_type = {item.findtext("rasd:ResourceType", namespaces=ns): item for item in items}
    assert sorted(by_type) == ["17", "3", "4", "6"]
    assert by_type["17"].findtext("rasd:HostResource", namespaces=ns) == f"ovf:/disk/{attr(disk, 'diskId')}"
    assert by_type["17"].findtext("rasd:Parent", namespaces=ns) == by_type["6"].findtext(
        "rasd:InstanceID", namespaces=ns
    )
    for item in items:
        names = [child.tag.split("}")[1] for child in item]
        assert names == sorted(names), "rasd elements in the CIM schema's (alphabetical) order"
    for section in document.iter(
        f"{{{OVF_NS}}}DiskSection",
        f"{{{OVF_NS}}}VirtualSystem",
        f"{{{OVF_NS}}}OperatingSystemSection",
        f"{{{OVF_NS}}}VirtualHardwareSection",
    ):
        assert section[0].tag == f"{{{OVF_NS}}}Info", "every section starts with its Info"


def test_ova_descriptor_describes_the_packed_disk(tmp_path: Path) -> None:
    """The OVA's descriptor names the vmdk member with its size, and the base image's capacity."""
    job, tools, plugin = setup(tmp_path, "ova")
    original = tools._tar
    seen = {}

    def keep_descriptor(argv: list[str], on_line: Any) -> str:
        if "--create" in argv:
            directory = argv[argv.index("--directory") + 1]
            seen["ovf"] = Path(directory, "mocky.ovf").read_bytes()
        return original(argv, on_line)

    tools._tar = keep_descriptor  # type: ignore[method-assign]
    result_of(plugin.build(job))
    document = etree.fromstring(seen["ovf"])
    reference = document.find(f"{{{OVF_NS}}}References/{{{OVF_NS}}}File")
    assert reference.get(f"{{{OVF_NS}}}href") == "mocky-disk1.vmdk"
    assert reference.get(f"{{{OVF_NS}}}size") == "1000"
    assert document.find(f"{{{OVF_NS}}}DiskSection/{{{OVF_NS}}}Disk").get(f"{{{OVF_NS}}}capacity") == str(SIZE)
