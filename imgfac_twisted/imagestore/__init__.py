"""The shared image store: where finished target images are kept, for every node to read.

``image_store`` names it: a directory (default ``<state_dir>/images``; a
shared mount such as NFS when several nodes work) or ``s3://bucket/prefix``
(``DirectoryImageStore``, ``S3ImageStore``; both are ``IImageStore``).
Workers put each target image there before its builder is COMPLETED; pushes
and ``raw_image`` downloads read it from there.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import Config
from ..doors import IDoor
from ..errors import ConfigError
from .directory import DirectoryImageStore
from .interface import S3_SCHEME, IImageStore, ImageStoreError, image_key, is_s3_location, put_or_clean_up
from .s3 import S3ImageStore, S3Settings

__all__ = [
    "IMAGES_DIR",
    "DirectoryImageStore",
    "IImageStore",
    "ImageStoreError",
    "S3ImageStore",
    "S3Settings",
    "image_key",
    "image_store_from_config",
    "is_s3_location",
    "put_or_clean_up",
]

IMAGES_DIR = "images"


def image_store_from_config(config: Config, disk_door: IDoor, cloud_door: IDoor, reactor: Any) -> IImageStore:
    """The image store ``config`` names; ConfigError when it is unusable (a directory that cannot be made).

    Blocking for a directory store (it is made here): call it before the reactor runs.
    """
    where = config.image_store or os.path.join(config.state_dir, IMAGES_DIR)
    if is_s3_location(where):
        settings = S3Settings(
            url=where,
            endpoint=config.image_store_endpoint,
            region=config.image_store_region,
            access_key_id=config.image_store_access_key_id,
            secret_access_key=config.image_store_secret_access_key,
        )
        try:
            return S3ImageStore(settings, cloud_door, reactor)
        except ValueError as error:
            raise ConfigError(f"option 'image_store': {error}") from None
    if "://" in where:
        raise ConfigError(f"option 'image_store' must be a directory or {S3_SCHEME}bucket/prefix, not {where!r}")
    root = os.path.abspath(where)
    try:
        os.makedirs(root, mode=0o750, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"image store directory {root} cannot be created: {error.strerror}") from None
    return DirectoryImageStore(root, disk_door)
