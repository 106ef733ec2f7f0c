"""Where archive images are read from and results written to: a local path or any pyarrow / fsspec URI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from anomaly.errors import AnomalyError
from anomaly.imageio import IMAGE_SUFFIXES


@contextmanager
def filesystem_errors(location: str) -> Iterator[None]:
    """A storage failure that ends the job (unreachable bucket, a file where a folder should be) as one line, not a
    traceback; failures reading one image are the scorer's, recorded in that image's row."""
    try:
        yield
    except OSError as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise AnomalyError(f"{location}: {reason}") from None


def open_filesystem(location: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path, a URI pyarrow knows (s3://, gs://, hdfs://, file://),
    or any other URI an installed fsspec implementation knows."""
    import pyarrow
    from pyarrow import fs

    if "://" not in location:
        return fs.LocalFileSystem(), str(Path(location).resolve())
    try:
        with filesystem_errors(location):
            return fs.FileSystem.from_uri(location)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, ValueError) as pyarrow_error:
        reason = str(pyarrow_error).splitlines()[0]
    try:
        import fsspec

        filesystem, path = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as fsspec_error:
        raise AnomalyError(f"cannot open {location}: {reason}; fsspec: {fsspec_error}") from None
    return fs.PyFileSystem(fs.FSSpecHandler(filesystem)), path


@dataclass(frozen=True)
class ArchiveLocation:
    """A folder-like location. Pickled to Ray workers as its string; each process opens the filesystem once."""

    location: str

    @cached_property
    def _opened(self) -> tuple[Any, str]:
        return open_filesystem(self.location)

    @property
    def filesystem(self) -> Any:
        return self._opened[0]

    @property
    def root(self) -> str:
        return self._opened[1]

    def __getstate__(self) -> dict[str, str]:
        return {"location": self.location}

    def __setstate__(self, state: dict[str, str]) -> None:
        object.__setattr__(self, "location", state["location"])

    def display(self, relative: str) -> str:
        """How a file inside is named in results: the location as given, joined with the relative path."""
        return f"{self.location.rstrip('/')}/{relative}"

    def full_path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def image_files(self) -> list[str]:
        """Relative POSIX paths of every file with an image suffix below the location, sorted."""
        from pyarrow import fs

        with filesystem_errors(self.location):
            if self.filesystem.get_file_info(self.root).type != fs.FileType.Directory:
                raise AnomalyError(f"input folder not found: {self.location}")
            entries = self.filesystem.get_file_info(fs.FileSelector(self.root, recursive=True))
        root = PurePosixPath(self.root)
        return sorted(
            str(PurePosixPath(entry.path).relative_to(root))
            for entry in entries
            if entry.type == fs.FileType.File and PurePosixPath(entry.path).suffix.lower() in IMAGE_SUFFIXES
        )

    def read(self, relative: str) -> bytes:
        with self.filesystem.open_input_stream(self.full_path(relative)) as stream:
            return stream.read()

    def write(self, relative: str, data: bytes) -> str:
        """Write a file below the location (parents created) and return its displayed name."""
        path = self.full_path(relative)
        self.filesystem.create_dir(str(PurePosixPath(path).parent), recursive=True)
        with self.filesystem.open_output_stream(path) as stream:
            stream.write(data)
        return self.display(relative)
