"""Images packed in archives (zip libraries, Qt resource files): unpacked once, bounded, with
unsafe or corrupt members skipped and counted, and drawn as an NPD set like any folder."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from copycat.errors import DataError
from copycat.pools import archives
from copycat.pools.archives import ArchiveError, rcc_members, safe_member, unpack
from copycat.pools.sources import NpdSet, npd_set_files, npd_set_source


def png(colour: tuple[int, int, int], *, alpha: bool = True) -> bytes:
    """A 24x24 image: a coloured square on a transparent (or black) background."""
    img = Image.new("RGBA" if alpha else "RGB", (24, 24))
    img.paste(colour, (6, 6, 18, 18))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write_rcc(path: Path, files: dict[str, tuple[int, bytes]]) -> None:
    """A version-2 Qt resource file with one folder ``img`` holding ``files`` (name -> (flags,
    bytes as stored)), laid out as Qt's rcc tool lays it out."""
    names = b""
    name_off: dict[str, int] = {}
    for n in ["img", *files]:
        name_off[n] = len(names)
        names += struct.pack(">HI", len(n), 0) + n.encode("utf-16-be")
    data = b""
    data_off: dict[str, int] = {}
    for n, (_, raw) in files.items():
        data_off[n] = len(data)
        data += struct.pack(">I", len(raw)) + raw
    tree = struct.pack(">IHII", 0, 2, 1, 1) + bytes(8)  # root: 1 child at node 1
    tree += struct.pack(">IHII", name_off["img"], 2, len(files), 2) + bytes(8)
    for n, (flags, _) in files.items():
        tree += struct.pack(">IHHHI", name_off[n], flags, 0, 0, data_off[n]) + bytes(8)
    header = 20
    path.write_bytes(
        b"qres"
        + struct.pack(">IIII", 2, header, header + len(tree), header + len(tree) + len(data))
        + tree
        + data
        + names
    )


def qcompress(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + zlib.compress(raw)


@pytest.fixture()
def packed(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    root.mkdir()
    with zipfile.ZipFile(root / "lib.sh3f", "w") as z:
        z.writestr("lib/chair.png", png((200, 50, 50)))
        z.writestr("lib/skirt.png", png((50, 200, 50)))
        z.writestr("lib/chair/texture.png", png((9, 9, 9)))  # a model's texture: too deep
        z.writestr("../evil.png", png((1, 2, 3)))
        z.writestr("lib/notes.txt", b"not an image")
    write_rcc(
        root / "photos.rcc",
        {
            "plain.png": (0, png((40, 40, 220), alpha=False)),
            "packed.png": (1, qcompress(png((220, 220, 40), alpha=False))),
            "zstd.png": (4, b"\x28\xb5\x2f\xfd"),
            "script.qml": (0, b"Item {}"),
        },
    )
    (root / "broken.rcc").write_bytes(b"qres" + struct.pack(">IIII", 2, 20, 9999, 9999))
    return root


def test_member_paths_that_leave_the_folder_are_refused() -> None:
    assert str(safe_member("lib/a.png")) == "lib/a.png"
    assert str(safe_member("/abs/a.png")) == "abs/a.png"
    assert str(safe_member("./lib\\a.png")) == "lib/a.png"
    for bad in ("../a.png", "lib/../../a.png", "", "C:/a.png"):
        assert safe_member(bad) is None, bad


def test_rcc_files_are_read_inflated_and_bounded(packed: Path) -> None:
    got = dict(rcc_members(packed / "photos.rcc", (".png",)))
    assert set(got) == {"/img/plain.png", "/img/packed.png", "/img/zstd.png"}
    assert got["/img/packed.png"] == png((220, 220, 40), alpha=False)
    assert got["/img/zstd.png"] == "unsupported compression (zstd)"
    with pytest.raises(ArchiveError, match="truncated"):
        list(rcc_members(packed / "broken.rcc", (".png",)))


def test_unpack_skips_and_counts_what_it_cannot_use_and_runs_once(
    packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "out"
    found = sorted(packed.iterdir())
    folders, skipped = unpack(found, dest, suffixes=(".png",), max_depth=2)
    assert [f.name for f in folders] == ["lib", "photos"]  # the corrupt archive has none
    assert skipped == {
        "corrupt archive": 1,
        "unsafe member path": 1,
        "unsupported compression (zstd)": 1,
    }
    files = sorted(str(f.relative_to(dest)) for f in dest.rglob("*.png"))
    assert files == [
        "lib/lib/chair.png",
        "lib/lib/skirt.png",
        "photos/img/packed.png",
        "photos/img/plain.png",
    ]
    assert not (tmp_path / "evil.png").exists()
    # a second call reuses the folders (stamped by each archive's size and time) and counts
    # the same skips; an archive that changed is unpacked again
    (dest / "lib" / "lib" / "chair.png").write_bytes(b"kept")
    assert unpack(found, dest, suffixes=(".png",), max_depth=2)[1] == skipped
    assert (dest / "lib" / "lib" / "chair.png").read_bytes() == b"kept"
    # a member over the bound is skipped before it is inflated
    monkeypatch.setattr(archives, "MAX_MEMBER_BYTES", 100)
    with zipfile.ZipFile(packed / "lib.sh3f", "a") as z:
        z.writestr("lib/extra.png", png((1, 1, 1)))
    _, again = unpack([packed / "lib.sh3f"], dest, suffixes=(".png",), max_depth=2)
    assert again["too large"] == 3 and not (dest / "lib" / "lib" / "chair.png").exists()


def test_a_packed_set_is_drawn_like_a_folder_with_its_exclusions(
    packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COPYCAT_CACHE", str(tmp_path / "cache"))
    s = NpdSet(
        "packed", (packed,), "objects", "pkg", archives=("*.sh3f", "*.rcc"), members=(".png",)
    )
    files, skipped = npd_set_files(s, exclude=("skirt",))
    assert sorted(f.name for f in files) == ["chair.png", "packed.png", "plain.png", "texture.png"]
    assert skipped["corrupt archive"] == 1
    shallow = NpdSet(
        "shallow",
        (packed,),
        "objects",
        "pkg",
        archives=("*.sh3f",),
        members=(".png",),
        member_depth=2,
    )
    source = npd_set_source(shallow, shape=(1, 28, 28), max_pixels=10**6, exclude=("skirt",))
    assert source is not None and len(source.bank) == 1  # chair.png only
    assert source.groups == ["lib"]
    img, names = source.draw_named(2, torch.Generator().manual_seed(0))
    assert img.shape == (2, 1, 56, 56) and names == ["shallow/lib", "shallow/lib"]
    assert int(img.max()) > 0  # the object, cropped and centred, is visible


def test_a_cache_that_cannot_be_written_is_an_error_naming_the_fix(
    packed: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    with pytest.raises(DataError, match="COPYCAT_CACHE"):
        unpack([packed / "lib.sh3f"], blocked / "out", suffixes=(".png",))
    # a write that fails half-way (here: a file where a member's folder must go) is the same
    # error, and leaves no half-unpacked folder behind to be taken for a finished one
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / f".lib.tmp-{os.getpid()}").write_text("in the way")
    with pytest.raises(DataError, match="free some space"):
        unpack([packed / "lib.sh3f"], dest, suffixes=(".png",))
    assert not (dest / "lib").exists() and not (dest / "lib.json").exists()
