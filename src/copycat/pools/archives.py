"""Images packed inside archives: zip files (Sweet Home 3D's ``.sh3f`` furniture libraries) and
Qt resource files (``.rcc``, GCompris' photos), unpacked once into a cache folder so the NPD
sets read them as ordinary files.

Archives come from packages, but they are parsed as untrusted input: member paths are
sanitised (no absolute path, no ``..``), every member is bounded in size before it is
decompressed, and a corrupt archive is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from copycat.errors import DataError
from copycat.runs import write_atomic

log = logging.getLogger(__name__)

# Larger members are skipped: an icon or photo of a package is well under this.
MAX_MEMBER_BYTES = 16 * 2**20
# Bump when extraction changes what it writes, so stale folders are not reused.
EXTRACT_VERSION = 1


class ArchiveError(ValueError):
    """An archive that cannot be read (truncated, or not the format its name says)."""


def safe_member(name: str) -> PurePosixPath | None:
    """The member path relative to the archive's root, or None for one that would leave it."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("/", "", ".")]
    if not parts or any(p == ".." or ":" in p for p in parts):
        return None
    return PurePosixPath(*parts)


def zip_members(path: Path, suffixes: tuple[str, ...]) -> Iterator[tuple[str, bytes | str]]:
    """(name, bytes) of each member of a zip file whose name ends in one of ``suffixes``;
    (name, reason) for one that is skipped."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.is_dir() or not info.filename.lower().endswith(suffixes):
                    continue
                if info.file_size > MAX_MEMBER_BYTES:
                    yield info.filename, "too large"
                    continue
                try:
                    with z.open(info) as f:
                        data = f.read(MAX_MEMBER_BYTES + 1)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError):
                    yield info.filename, "corrupt"
                    continue
                yield info.filename, data if len(data) <= MAX_MEMBER_BYTES else "too large"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArchiveError(f"{path}: not a readable zip file ({exc})") from exc


def rcc_members(path: Path, suffixes: tuple[str, ...]) -> Iterator[tuple[str, bytes | str]]:
    """(name, bytes) of each file in a Qt resource file (``rcc`` format versions 1-3) whose
    name ends in one of ``suffixes``; (name, reason) for one that is skipped.

    The format: a ``qres`` header (version, then offsets of the tree, the data and the names),
    a tree of 14-byte nodes (22 from version 2), names as a length, a hash and UTF-16BE, and
    data as a length and the bytes, zlib-compressed behind a 4-byte size when flagged.
    """
    try:
        b = path.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot be read ({exc})") from exc
    if len(b) < 20 or b[:4] != b"qres":
        raise ArchiveError(f"{path}: not a Qt resource file (no 'qres' header)")

    def u(fmt: str, at: int) -> tuple[int, ...]:
        if at < 0 or at + struct.calcsize(fmt) > len(b):
            raise ArchiveError(f"{path}: truncated (offset {at} past the end)")
        return struct.unpack_from(fmt, b, at)

    version, tree, data, names = u(">IIII", 4)
    if not 1 <= version <= 3:
        raise ArchiveError(f"{path}: rcc format version {version} is not supported (1-3)")
    node = 14 if version < 2 else 22

    def name_at(offset: int) -> str:
        (n,) = u(">H", names + offset)
        start = names + offset + 6
        if start + 2 * n > len(b):
            raise ArchiveError(f"{path}: truncated name")
        return b[start : start + 2 * n].decode("utf-16-be", errors="replace")

    seen: set[int] = set()
    stack: list[tuple[int, str]] = [(0, "")]
    while stack:
        i, prefix = stack.pop()
        if i in seen:  # a tree that loops back on itself
            raise ArchiveError(f"{path}: its resource tree is not a tree")
        seen.add(i)
        base = tree + i * node
        name_off, flags = u(">IH", base)
        name = name_at(name_off) if i else ""
        if flags & 2:  # a directory: its children are consecutive nodes
            count, first = u(">II", base + 6)
            if count > len(b) // node:
                raise ArchiveError(f"{path}: a directory of {count} entries")
            stack += [(first + j, f"{prefix}{name}/") for j in range(count)]
            continue
        full = prefix + name
        if not full.lower().endswith(suffixes):
            continue
        (data_off,) = u(">I", base + 10)
        (size,) = u(">I", data + data_off)
        start = data + data_off + 4
        if start + size > len(b):
            raise ArchiveError(f"{path}: truncated data of {full}")
        raw = b[start : start + size]
        if flags & 4:
            yield full, "unsupported compression (zstd)"
        elif flags & 1:
            (declared,) = struct.unpack_from(">I", raw, 0) if len(raw) >= 4 else (0,)
            if declared > MAX_MEMBER_BYTES:
                yield full, "too large"
                continue
            try:
                d = zlib.decompressobj()
                out = d.decompress(raw[4:], MAX_MEMBER_BYTES + 1)
            except zlib.error:
                yield full, "corrupt"
                continue
            yield full, out if len(out) <= MAX_MEMBER_BYTES else "too large"
        else:
            yield full, raw if size <= MAX_MEMBER_BYTES else "too large"


def archive_members(path: Path, suffixes: tuple[str, ...]) -> Iterator[tuple[str, bytes | str]]:
    """Members of a zip file or a Qt resource file, told apart by their first bytes."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot be read ({exc})") from exc
    if head == b"qres":
        return rcc_members(path, suffixes)
    if head.startswith(b"PK"):
        return zip_members(path, suffixes)
    raise ArchiveError(f"{path}: neither a zip file nor a Qt resource file")


def unpack(
    archives: list[Path], dest: Path, *, suffixes: tuple[str, ...], max_depth: int = 0
) -> tuple[list[Path], Counter[str]]:
    """Unpack the members of ``archives`` ending in ``suffixes`` into ``dest/<archive stem>/``
    (once: a folder whose stamp matches the archive's size and time is reused) and return the
    archives' folders, with the members and archives skipped, by reason. ``max_depth`` > 0
    keeps only members at most that many path parts deep (a library's icons, not the
    textures of its models in sub-folders)."""
    skipped: Counter[str] = Counter()
    folders: list[Path] = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot unpack archives into {dest} ({exc}); set COPYCAT_CACHE to a writable folder"
        ) from exc
    for archive in archives:
        st = archive.stat()
        stamp = {
            "version": EXTRACT_VERSION,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "suffixes": list(suffixes),
            "max_depth": max_depth,
        }
        folder = dest / archive.stem
        stamp_file = dest / f"{archive.stem}.json"
        try:
            done = json.loads(stamp_file.read_text()) if stamp_file.is_file() else None
        except (OSError, ValueError):
            done = None
        if isinstance(done, dict) and done.get("stamp") == stamp and folder.is_dir():
            skipped.update(done.get("skipped", {}))
            folders.append(folder)
            continue
        tmp = dest / f".{archive.stem}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        here: Counter[str] = Counter()
        try:
            for name, got in archive_members(archive, suffixes):
                rel = safe_member(name)
                if rel is not None and max_depth and len(rel.parts) > max_depth:
                    continue
                if rel is None:
                    here["unsafe member path"] += 1
                elif isinstance(got, str):
                    here[got] += 1
                else:
                    out = tmp / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(got)
            tmp.mkdir(exist_ok=True)  # an archive with no image still gets its (empty) folder
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            write_atomic(stamp_file, json.dumps({"stamp": stamp, "skipped": here}))
        except ArchiveError as exc:
            log.warning("skipped an archive: %s", exc)
            skipped["corrupt archive"] += 1
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        except OSError as exc:  # a full disk or a read-only cache: nothing to skip, a fix
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(
                f"could not unpack {archive} into {dest} ({exc}); free some space there or "
                "set COPYCAT_CACHE to a writable folder with room"
            ) from exc
        skipped.update(here)
        folders.append(folder)
    return folders, skipped
