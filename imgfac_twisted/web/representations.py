"""The JSON documents of the factory API, shaped as the spec's examples."""

from __future__ import annotations

import json
from typing import Any

from ..jobs.dispatcher import StartedBuild
from ..jobs.imports import ImportedImage
from ..model import Builder, Operation, Stage

PREFIX = "/imagefactory"


def image_path(image_id: str) -> str:
    return f"{PREFIX}/images/{image_id}"


def build_path(image_id: str, build_id: str) -> str:
    return f"{image_path(image_id)}/builds/{build_id}"


def target_image_path(image_id: str, build_id: str, target_image_id: str) -> str:
    return f"{build_path(image_id, build_id)}/target_images/{target_image_id}"


def provider_image_path(image_id: str, build_id: str, target_image_id: str, provider_image_id: str) -> str:
    return f"{target_image_path(image_id, build_id, target_image_id)}/provider_images/{provider_image_id}"


def builder_path(builder_id: str) -> str:
    return f"{PREFIX}/builders/{builder_id}"


def object_path(builder: Builder) -> str:
    """The target or provider image URL path of the image a builder makes."""
    if builder.operation == Operation.PUSH:
        assert builder.target_image_id is not None
        return provider_image_path(builder.image_id, builder.build_id, builder.target_image_id, builder.id)
    return target_image_path(builder.image_id, builder.build_id, builder.id)


def object_type(builder: Builder) -> str:
    """``target_image`` or ``provider_image``."""
    return "provider_image" if builder.operation == Operation.PUSH else "target_image"


def builder_document(builder: Builder, _type: str, href: str) -> dict[str, Any]:
    """A builder's details (the spec's builder and target image examples)."""
    document: dict[str, Any] = {
        "status": builder.status.value,
        "_type": _type,
        "completed": builder.completed,
        "provider_account_identifier": builder.provider_account_identifier,
        "image_id": builder.image_id,
        "href": href,
        "operation": builder.operation.value,
        "id": builder.id,
        "build_id": builder.build_id,
        "target": builder.target,
        "provider": builder.provider,
        "target_image_id": builder.target_image_id,
        "status_detail": builder.status_detail,
        "stage": builder.stage.value if builder.stage is not None else None,
        "stages": [stage_document(stage) for stage in builder.stages],
        "worker": builder.worker,
    }
    if builder.operation == Operation.PUSH:
        document["identifier_on_provider"] = builder.identifier_on_provider
        # What the provider reported besides the identifier (e.g. snapshot_id),
        # never overriding the builder's own fields.
        for name, value in json.loads(builder.provider_details or "{}").items():
            document.setdefault(name, value)
    else:
        document["image_size"] = builder.artifact_size
        document["image_sha256"] = builder.artifact_sha256
    return document


def stage_document(stage: Stage) -> dict[str, Any]:
    """One stage of a builder's work, with ISO 8601 UTC times (``ended_at`` null while it runs)."""
    return {"name": stage.name.value, "started_at": stage.started_text, "ended_at": stage.ended_text}


def status_document(builder: Builder, _type: str, href: str) -> dict[str, Any]:
    """Just a builder's status (the spec's ``.../status`` examples)."""
    return {"status": builder.status.value, "_type": _type, "href": href, "id": builder.id}


def started_build_document(base: str, started: StartedBuild) -> dict[str, Any]:
    """The answer to a build request: the image, its build and the target images."""
    image, build = started.image, started.build
    return {
        "_type": "image",
        "href": base + image_path(image.id),
        "id": image.id,
        "build": {
            "target_images": [
                {
                    "_type": "target_image",
                    "href": base + target_image_path(image.id, build.id, target.id),
                    "id": target.id,
                }
                for target in started.target_images
            ],
            "_type": "build",
            "href": base + build_path(image.id, build.id),
            "id": build.id,
        },
    }


def imported_image_document(base: str, imported: ImportedImage) -> dict[str, Any]:
    """The answer to an import: the image, its build, target image and provider image, nested (2011 factory)."""
    image, build = imported.image, imported.build
    target, push = imported.target_builder, imported.push_builder
    assert push.target_image_id is not None
    return {
        "_type": "image",
        "href": base + image_path(image.id),
        "id": image.id,
        "build": {
            "_type": "build",
            "href": base + build_path(image.id, build.id),
            "id": build.id,
            "target_images": [
                {
                    "_type": "target_image",
                    "href": base + target_image_path(image.id, build.id, target.id),
                    "id": target.id,
                    "provider_images": [
                        {
                            "_type": "provider_image",
                            "href": base + provider_image_path(image.id, build.id, target.id, push.id),
                            "id": push.id,
                        }
                    ],
                }
            ],
        },
    }
