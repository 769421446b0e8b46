"""The ec2 target's sparse copy hashed while written, against convert-then-hash.

Both make the same thing from the same raw base image: a sparse raw copy and
its SHA-256.  The baseline is what the ec2 target did before: ``qemu-img
convert -O raw`` (sparse) and then reading the whole copy again to hash it.
The measured side is ``imgfac_twisted.targets.sparse.copy_hashed``.  Rounds
alternate, the page cache is dropped before each (when run as root), and the
medians are compared: the ratio is baseline time / copy_hashed time, so
above 1 means the daemon's way is faster.

    .venv/bin/python bench/bench_raw_copy.py [--size-gib 4] [--data-mib 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time

from benchlib import BenchError

from imgfac_twisted.jobs.work import file_artifact
from imgfac_twisted.targets.sparse import copy_hashed

MIB = 1024 * 1024


def make_base(path: str, size: int, data: int) -> None:
    """A sparse disk of ``size`` bytes with ``data`` bytes of random data in 8 MiB runs spread over it."""
    runs = max(data // (8 * MIB), 1)
    stride = size // runs
    with open(path, "wb") as stream:
        stream.truncate(size)
        for index in range(runs):
            stream.seek(index * stride)
            stream.write(os.urandom(8 * MIB))


def drop_caches() -> None:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as stream:
            stream.write("3\n")
    except OSError:
        pass  # not root: the rounds then read from the page cache, both alike


def baseline(base: str, copy: str) -> str:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", base, copy], check=True)
    return file_artifact(copy).sha256


def hashed_copy(base: str, copy: str) -> str:
    return copy_hashed(base, copy, lambda _: None, threading.Event()).sha256


def timed(fn, base: str, copy: str) -> tuple[float, str]:
    drop_caches()
    started = time.perf_counter()
    digest = fn(base, copy)
    elapsed = time.perf_counter() - started
    os.remove(copy)
    return elapsed, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--data-mib", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as folder:
        base, copy = os.path.join(folder, "base.raw"), os.path.join(folder, "copy.raw")
        make_base(base, options.size_gib * 1024 * MIB, options.data_mib * MIB)
        expected = file_artifact(base).sha256
        times: dict[str, list[float]] = {"convert+hash": [], "copy_hashed": []}
        for _ in range(options.rounds):
            for name, fn in (("convert+hash", baseline), ("copy_hashed", hashed_copy)):
                elapsed, digest = timed(fn, base, copy)
                if digest != expected:
                    raise BenchError(f"{name} made a copy whose SHA-256 is not the base image's")
                times[name].append(elapsed)
        medians = {name: statistics.median(values) for name, values in times.items()}
        print(f"{options.size_gib} GiB raw disk, {options.data_mib} MiB of data, {options.rounds} rounds")
        for name, values in times.items():
            print(f"  {name:13} median {medians[name]:6.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"ratio convert+hash / copy_hashed = {medians['convert+hash'] / medians['copy_hashed']:.2f}")


if __name__ == "__main__":
    main()
