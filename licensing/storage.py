"""Where resource contents live: a small store interface and its local-folder implementation.

Locations are relative, forward-slash paths such as ``resources/<resource id>/v<n>.parquet``; they are
what a ``ResourceVersion`` records, so the same rows work whichever store holds the files.

Production is meant to use an S3-compatible object store behind the same interface; that store is not built
yet (only ``LocalContentStore`` exists). DuckDB reads Parquet from S3 directly, so readers keep asking
``path_for`` (a local path today, an ``s3://`` URL then).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol


class ContentStore(Protocol):
    """Stores finished Parquet files at locations and gives them back for reading."""

    def staging_folder(self) -> Path:
        """A local folder for uploads and files being prepared; ``put`` takes its files from here."""
        ...

    def put(self, written: Path, location: str) -> None:
        """Move the finished file ``written`` to ``location`` (atomically: readers see all of it or nothing)."""
        ...

    def open(self, location: str) -> BinaryIO:
        """The stored file, for reading bytes."""
        ...

    def path_for(self, location: str) -> Path:
        """A path DuckDB can read the stored file from."""
        ...

    def exists(self, location: str) -> bool:
        """Whether something is stored at ``location``."""
        ...

    def delete(self, location: str) -> None:
        """Remove what is stored at ``location`` (nothing happens when there is nothing)."""
        ...


def local_store(data_dir: Path) -> LocalContentStore:
    """The store of the platform's settings (``settings.resolved_data_dir``)."""
    return LocalContentStore(data_dir)


def version_location(resource_id: uuid.UUID, version: int) -> str:
    """Where version ``version`` of a resource's contents is stored."""
    return f"resources/{resource_id}/v{version}.parquet"


class LocalContentStore:
    """Contents as files under one folder (the settings' ``resolved_data_dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, location: str) -> Path:
        """The file of ``location`` under the root; refuses locations that would leave it."""
        relative = PurePosixPath(location)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"not a content location: {location!r}")
        return self.root.joinpath(*relative.parts)

    def staging_folder(self) -> Path:
        """``.staging`` under the root: the same file system as the contents, so that ``put`` is a rename."""
        folder = self.root / ".staging"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def put(self, written: Path, location: str) -> None:
        """Rename ``written`` to the location (same file system: atomic)."""
        target = self.path_for(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, target)

    def open(self, location: str) -> BinaryIO:
        """The stored file, opened for reading."""
        return self.path_for(location).open("rb")

    def exists(self, location: str) -> bool:
        """Whether the file exists."""
        return self.path_for(location).is_file()

    def delete(self, location: str) -> None:
        """Remove the file if it is there."""
        self.path_for(location).unlink(missing_ok=True)
