"""The work directory of a `--tasks` job: a local (or mounted shared) directory, or object storage.

A plain path is used in place: a task writes into `NAME.partial` and renames it to `NAME` when done, so a
killed task leaves nothing a later phase could read. A URL (`s3://bucket/work`, `gcs://...`,
`file:///abs/path`) goes through fsspec, where there is no rename: a task writes into a local scratch
directory and uploads it when done, after removing what a killed attempt may have left. A later phase
never sees a half-uploaded task either way, because datatrove marks a task complete only after it
returned and starts a phase only once every task of the previous one is complete.

Reads go through `open` (streamed: a dedup task reads only its members of each screen task's key file)
or `fetch` (a local copy, for what needs a path: token files mapped in memory, a tokenizer file).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

from lit_pretrain.data.remote_sources import filesystem


class WorkDir:
    """A job's work directory, local or on an fsspec filesystem; paths in it are relative, with `/`."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.remote = "://" in self.location
        if self.remote:
            try:
                self.fs, self.root = filesystem(self.location)
            except (ImportError, ValueError) as err:
                raise type(err)(f"--work_dir {self.location!r}: {err}") from err
        else:
            self.fs, self.root = None, str(Path(self.location).resolve())
        self._scratch: Path | None = None

    @classmethod
    def of(cls, location: str | Path | WorkDir) -> WorkDir:
        """`location` as a WorkDir."""
        return location if isinstance(location, WorkDir) else cls(location)

    def __repr__(self) -> str:
        """The location, as the user gave it."""
        return self.location

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its location (datatrove ships the phase steps to other processes)."""
        return (WorkDir, (self.location,))

    def url(self, relative: str = "") -> str:
        """The path or URL of `relative`, for messages and for datatrove's logging directory."""
        if not relative:
            return self.location if self.remote else self.root
        return f"{self.location.rstrip('/')}/{relative}" if self.remote else str(Path(self.root) / relative)

    def _path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}" if self.remote else str(Path(self.root) / relative)

    # ------------------------------------------------------------------------------------------ reading
    def exists(self, relative: str) -> bool:
        """Whether `relative` exists."""
        return self.fs.exists(self._path(relative)) if self.remote else Path(self._path(relative)).exists()

    def open(self, relative: str, mode: str = "rb") -> IO[Any]:
        """A file of the work directory, opened for streaming reads (seekable) or a whole write."""
        if self.remote:
            return self.fs.open(self._path(relative), mode)
        return open(self._path(relative), mode)  # noqa: SIM115 - the caller closes it

    def read_text(self, relative: str) -> str:
        """A text file's content."""
        with self.open(relative, "rb") as file:
            return file.read().decode("utf-8")

    def size(self, relative: str) -> int:
        """A file's size in bytes."""
        return (
            self.fs.size(self._path(relative)) if self.remote else Path(self._path(relative)).stat().st_size
        )

    def fetch(self, relative: str) -> Path:
        """A local path holding `relative`'s content: the file itself, or a copy in this process's scratch
        directory (made once)."""
        if not self.remote:
            return Path(self._path(relative))
        local = self.scratch() / "fetched" / relative
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(local.name + ".partial")
            self.fs.get_file(self._path(relative), str(partial))
            partial.rename(local)
        return local

    def listdir(self, relative: str) -> list[str]:
        """Names of the entries of a directory (empty if it does not exist)."""
        if self.remote:
            path = self._path(relative)
            if not self.fs.exists(path):
                return []
            return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in self.fs.ls(path, detail=False))
        directory = Path(self._path(relative))
        return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []

    # ------------------------------------------------------------------------------------------ writing
    def stage(self, relative: str) -> Path:
        """An empty local directory where a task writes what `publish` then makes `relative`."""
        if self.remote:
            staged = self.scratch() / "staged" / relative
        else:
            staged = Path(self._path(relative + ".partial"))
        shutil.rmtree(staged, ignore_errors=True)  # what a killed attempt left
        staged.mkdir(parents=True)
        return staged

    def publish(self, staged: Path, relative: str) -> None:
        """Make a finished task's staged output `relative` (an earlier complete copy is replaced)."""
        if self.remote:
            target = self._path(relative)
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
            for path in sorted(p for p in staged.rglob("*") if p.is_file()):
                destination = f"{target}/{path.relative_to(staged).as_posix()}"
                self._make_parent(destination)
                self.fs.put_file(str(path), destination)
            shutil.rmtree(staged)
            return
        final = Path(self._path(relative))
        if final.exists():
            shutil.rmtree(final)
        staged.rename(final)

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write a whole file at `relative`: written aside and renamed, or uploaded in one request."""
        if self.remote:
            self._make_parent(self._path(relative))
            self.fs.pipe_file(self._path(relative), data)
            return
        target = Path(self._path(relative))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.rename(target)

    def _make_parent(self, path: str) -> None:
        # Object stores have no directories (a no-op there); file:// and mounted filesystems do.
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)

    def copy_files(self, relative: str, names: list[str], into: Path) -> None:
        """Files of directory `relative` into the local directory `into`: hard-linked where they can be
        (no bytes copied), else copied, or downloaded. The originals stay, so a step killed midway can
        run again."""
        for name in names:
            if self.remote:
                self.fs.get_file(self._path(f"{relative}/{name}"), str(into / name))
                continue
            source = self._path(f"{relative}/{name}")
            try:
                os.link(source, into / name)
            except OSError:  # another filesystem, or one without hard links
                shutil.copyfile(source, into / name)

    def remove(self) -> None:
        """Remove the whole work directory."""
        if self.remote:
            if self.fs.exists(self.root):
                self.fs.rm(self.root, recursive=True)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ scratch
    def scratch(self) -> Path:
        """This process's local scratch directory (made on first use, gone at `cleanup`)."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="lit-pretrain-task-"))
        return self._scratch

    def cleanup(self) -> None:
        """Remove the scratch directory."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
