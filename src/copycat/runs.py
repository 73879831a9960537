"""The run directory: where each stage reads its input and writes its output (paths only).

``runs/<name>/`` holds ``config.json``, ``answers.sqlite``, ``checkpoints/``, ``metrics.csv``,
``copycat.safetensors`` + ``copycat.json``, ``eval.json`` and the report. Any stage can be re-run
or resumed alone from what the earlier ones left here.

Every file is written atomically (a temporary file, fsync, ``os.replace``), so a kill mid-write
leaves the old version or the new one, never half of one; the steal stage holds an exclusive
lock on the directory (:meth:`RunDir.lock`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from copycat import __version__
from copycat.errors import CopycatError, RunLockedError, WriteError
from copycat.redact import redact_text


def _read_umask() -> int:
    """The process's umask, read once at import (setting it back at once; no file is made)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _mode_for(path: Path) -> int:
    """The permissions a replaced file keeps, or those a plain ``open`` gives a new one (a
    temporary file is made private, 0600, and would otherwise pass that on)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def write_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: readers see the old file or the new one."""
    save_atomic(path, lambda f: f.write(text), mode="w")


def save_atomic(path: str | Path, write: Callable[[IO[Any]], object], *, mode: str = "wb") -> None:
    """Replace ``path`` by what ``write`` writes to a file opened with ``mode``, all at once,
    through a temporary file of this writer's own: readers see the old file or the new one,
    and two writers at the same moment each write theirs whole. The file keeps its
    permissions, or a new one gets the umask's, as with a plain write. A write that fails (a
    full disk, no permission) raises :class:`~copycat.errors.WriteError`, the old file
    untouched."""
    path = Path(path)
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WriteError(
                f"could not write {path} ({exc.strerror or exc}); free disk space (or make the "
                "folder writable) and run the same command again: what was saved before is kept"
            ) from exc
        raise
    try:  # the rename itself survives power loss once the directory is synced
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(dfd)


def read_json(path: Path) -> dict[str, Any]:
    """A run-directory JSON file, or a clear error if a crash (before atomic writes) tore it."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CopycatError(
            f"{path} is truncated or corrupt ({exc}); it was probably cut by a crash: delete "
            f"it (or move it away) and run the command again, the answers are kept"
        ) from exc
    if not isinstance(data, dict):
        raise CopycatError(f"{path} holds no JSON object; delete it and run the command again")
    return data


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        return cls(Path(path))

    @property
    def store(self) -> Path:
        return self.root / "answers.sqlite"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def copycat_weights(self) -> Path:
        return self.root / "copycat.safetensors"

    @property
    def copycat_card(self) -> Path:
        return self.root / "copycat.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    def record(self, stage: str, config: Any, command: str | None = None) -> None:
        """Merge ``stage``'s resolved configuration (and command line) into ``config.json``."""
        path = self.root / "config.json"
        data = read_json(path) if path.is_file() else {}
        data["version"] = __version__
        # a round trip through JSON first: what is redacted is exactly what is written
        data[stage] = _redacted(json.loads(json.dumps(config, default=str)))
        if command:
            data.setdefault("commands", {})[stage] = redact_text(command)
        write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")

    def read_config(self) -> dict[str, Any]:
        path = self.root / "config.json"
        return read_json(path) if path.is_file() else {}

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @contextmanager
    def lock(self, stage: str) -> Iterator[None]:
        """Hold the run directory alone for ``stage`` (an exclusive ``flock``, released when
        the process ends, even by ``kill -9``); another holder is named by its pid."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                raise RunLockedError(
                    f"{self.root} is in use by another copycat process ({holder}); wait for "
                    "it to finish or stop it, or use another --run-dir"
                ) from exc
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, {stage}".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
