"""The S3 image store's put and fetch against boto3's own upload_file and download_file, on a moto_server.

Both sides move the same image in the same parts (16 MiB, 4 threads) to
the same local ``moto_server``.  The baseline is
boto3's plain file transfer: seekable, parts read in parallel, nothing
hashed.  The measured side is ``S3ImageStore``: the put reads a
non-seekable stream hashed as it is read (so the SHA-256 is of exactly the
bytes sent) and checks it with a HeadObject; the fetch writes in order,
leaves zeros as holes and hashes as it writes.  Rounds alternate and
medians are compared: the ratio is baseline time / image store time, so
below 1 is the price of the checks.  moto keeps objects in memory and runs
on the same cores: the figures are of overhead, not of a network.

    .venv/bin/python bench/bench_imagestore.py [--size-mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from benchlib import BenchError, free_port, start, stop, wait_until_serving
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig

from imgfac_twisted.imagestore import S3ImageStore, S3Settings
from imgfac_twisted.imagestore.s3 import CONCURRENCY, part_size_for
from imgfac_twisted.jobs.work import file_artifact
from imgfac_twisted.testing import InlineDoor

MIB = 1024 * 1024
BUCKET = "bench"
T = TypeVar("T")


def make_image(path: str, size: int) -> None:
    """Half random data, half zeros, in 8 MiB runs (a disk image's mix)."""
    with open(path, "wb") as stream:
        for index in range(size // (8 * MIB)):
            stream.write(os.urandom(8 * MIB) if index % 2 == 0 else bytes(8 * MIB))


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """How long ``fn(*args, **kwargs)`` took, and its result."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as folder:
        server = start(
            [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            os.path.join(folder, "moto.log"),
            folder,
        )
        try:
            wait_until_serving(url + "/moto-api/", server, os.path.join(folder, "moto.log"), None)
            run(url, folder, options.size_mib * MIB, options.rounds)
        finally:
            stop(server)


def run(url: str, folder: str, size: int, rounds: int) -> None:
    session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
    client = session.client("s3", endpoint_url=url, config=BotoConfig(s3={"addressing_style": "path"}))
    client.create_bucket(Bucket=BUCKET)
    store = S3ImageStore(
        S3Settings(
            url=f"s3://{BUCKET}/store",
            endpoint=url,
            region="us-east-1",
            access_key_id="bench",
            secret_access_key="bench",
        ),
        InlineDoor(),
        None,
    )
    config = TransferConfig(
        multipart_threshold=part_size_for(size), multipart_chunksize=part_size_for(size), max_concurrency=CONCURRENCY
    )
    image = os.path.join(folder, "image.raw")
    make_image(image, size)
    digest = file_artifact(image).sha256
    times: dict[str, list[float]] = {name: [] for name in ("upload_file", "store put", "download_file", "store fetch")}
    for index in range(rounds):
        source = os.path.join(folder, f"put{index}.raw")
        shutil.copyfile(image, source)
        plain = os.path.join(folder, "plain.raw")
        took, _ = timed(client.upload_file, image, BUCKET, f"plain/{index}", Config=config)
        times["upload_file"].append(took)
        took, location = timed(store.thd_put, source, f"{index}/image.raw", digest)
        times["store put"].append(took)
        took, _ = timed(client.download_file, BUCKET, f"plain/{index}", plain, Config=config)
        times["download_file"].append(took)
        took, fetched = timed(store.thd_fetch, location, os.path.join(folder, f"fetch{index}"), digest)
        times["store fetch"].append(took)
        if file_artifact(fetched).sha256 != digest or file_artifact(plain).sha256 != digest:
            raise BenchError("a downloaded copy is not the image")
        for path in (plain, fetched):
            os.remove(path)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{size // MIB} MiB image (half zeros), {rounds} rounds, moto_server on 127.0.0.1")
    for name, values in times.items():
        rate = size / MIB / medians[name]
        print(
            f"  {name:13} median {medians[name]:6.2f} s  {rate:7.1f} MiB/s  ({', '.join(f'{v:.2f}' for v in values)})"
        )
    print(f"ratio upload_file / store put     = {medians['upload_file'] / medians['store put']:.2f}")
    print(f"ratio download_file / store fetch = {medians['download_file'] / medians['store fetch']:.2f}")


if __name__ == "__main__":
    main()
