"""Pools: determinism, conversion of every image mode, skipping and counting bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from copycat.config import AugmentConfig, PoolConfig
from copycat.data.imageio import ImageDecodeError, decode_image
from copycat.errors import ConfigError, DataError
from copycat.pools.pool import build_pool
from copycat.steal.store import image_id


def _take(
    spec: str, shape: tuple[int, int, int], n: int, seed: int = 0, **kw: object
) -> torch.Tensor:
    pool = build_pool(PoolConfig(spec=spec, seed=seed, **kw), shape=shape)  # type: ignore[arg-type]
    return next(pool.batches(n)).images


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 17, 23)])
def test_folder_pool_converts_every_mode_to_the_oracle_shape(
    png_folder: Path, shape: tuple[int, int, int]
) -> None:
    imgs = _take(f"folder:{png_folder}", shape, 50)
    assert imgs.shape == (50, *shape) and imgs.dtype == torch.uint8


def test_same_seed_same_stream_other_seed_other_stream(png_folder: Path) -> None:
    a = _take(f"folder:{png_folder}", (1, 28, 28), 64, seed=3)
    b = _take(f"folder:{png_folder}", (1, 28, 28), 64, seed=3)
    c = _take(f"folder:{png_folder}", (1, 28, 28), 64, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_stream_does_not_depend_on_batch_size() -> None:
    pool = build_pool(PoolConfig(spec="noise"), shape=(1, 8, 8))
    a = [x for _, b in zip(range(30), pool.batches(10), strict=False) for x in b.images]
    b = [x for _, b in zip(range(12), pool.batches(25), strict=False) for x in b.images]
    assert [image_id(x) for x in a] == [image_id(x) for x in b]


def test_a_second_stream_repeats_the_first(png_folder: Path) -> None:
    pool = build_pool(PoolConfig(spec=f"folder:{png_folder}"), shape=(1, 28, 28))
    first = next(pool.batches(64)).images
    assert torch.equal(first, next(pool.batches(64)).images)


def test_bad_files_are_skipped_and_counted(png_folder: Path) -> None:
    pool = build_pool(PoolConfig(spec=f"folder:{png_folder}"), shape=(1, 28, 28))
    next(pool.batches(300))  # more than one pass over the folder
    assert pool.skipped == {"corrupt": 1, "empty": 1, "not an image": 3}


def test_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    big = tmp_path / "bomb.png"
    Image.new("1", (4000, 3000)).save(big)  # 12 MP, a few kB on disk
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(big, max_pixels=10_000_000)
    pool = build_pool(
        PoolConfig(spec=f"folder:{tmp_path}", max_pixels=10_000_000), shape=(1, 28, 28)
    )
    with pytest.raises(DataError, match="none of the 1 files"):
        next(pool.batches(4))


def test_large_images_are_downscaled_on_load(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((3000, 2000, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    img = decode_image(tmp_path / "big.jpg", max_side=256)
    assert max(img.size) <= 256


def test_mixed_pool_follows_its_weights(png_folder: Path) -> None:
    pool = build_pool(
        PoolConfig(spec=f"noise+folder:{png_folder}", mix=(0.8, 0.2)), shape=(1, 28, 28)
    )
    srcs = next(pool.batches(2000)).sources
    share = srcs.count("noise") / len(srcs)
    assert 0.75 < share < 0.85


def test_augmentation_changes_images_and_can_be_disabled(png_folder: Path) -> None:
    on = _take(f"folder:{png_folder}", (1, 28, 28), 100)
    off = _take(f"folder:{png_folder}", (1, 28, 28), 100, augment=AugmentConfig(enabled=False))
    assert len({image_id(x) for x in on}) == 100  # every augmented image is new
    assert len({image_id(x) for x in off}) == 20  # 20 readable files, repeated


def test_a_share_of_images_is_sent_whole_and_the_rest_as_before() -> None:
    from copycat.pools.augment import augment_batch

    base = torch.rand(400, 1, 56, 56, generator=torch.Generator().manual_seed(1))
    plain = augment_batch(base, (1, 28, 28), AugmentConfig(enabled=False), torch.Generator())
    cfg = AugmentConfig()
    before = augment_batch(base, (1, 28, 28), cfg, torch.Generator().manual_seed(0))
    half = augment_batch(
        base, (1, 28, 28), AugmentConfig(whole=0.5), torch.Generator().manual_seed(0)
    )
    whole = (half == plain).flatten(1).all(1)
    assert 0.4 < float(whole.float().mean()) < 0.6
    # the others are exactly the images the default would have sent
    assert torch.equal(half[~whole], before[~whole])
    assert not (before == plain).flatten(1).all(1).any()
    with pytest.raises(ConfigError, match="whole"):
        AugmentConfig(whole=1.5)


def test_colour_jitter_turns_hue_keeps_luma_and_leaves_grey_pools_alone() -> None:
    from copycat.pools.augment import augment_batch, colour_jitter

    red = torch.tensor([0.6, 0.3, 0.3]).view(1, 3, 1, 1).expand(1, 3, 4, 4).clone()
    # a third of the circle takes red to green, two thirds to blue; luma is kept, and a scale
    # of 0 leaves grey
    third = colour_jitter(red, turn=torch.tensor([1 / 3]), scale=torch.tensor([1.0]))
    assert int(third[0, :, 0, 0].argmax()) == 1
    two = colour_jitter(red, turn=torch.tensor([2 / 3]), scale=torch.tensor([1.0]))
    assert int(two[0, :, 0, 0].argmax()) == 2
    luma = torch.tensor([0.299, 0.587, 0.114])
    assert abs(float(luma @ third[0, :, 0, 0]) - float(luma @ red[0, :, 0, 0])) < 0.05
    grey = colour_jitter(red, turn=torch.tensor([0.0]), scale=torch.tensor([0.0]))
    assert float(grey[0].std(0).max()) < 1e-5
    same = colour_jitter(red, turn=torch.tensor([0.0]), scale=torch.tensor([1.0]))
    assert torch.allclose(same, red, atol=1e-5)

    base = torch.rand(64, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    before = augment_batch(base, (3, 32, 32), AugmentConfig(), torch.Generator().manual_seed(0))
    cfg = AugmentConfig(hue=0.5, saturation=0.5)
    after = augment_batch(base, (3, 32, 32), cfg, torch.Generator().manual_seed(0))
    assert not torch.equal(before, after)
    # the geometry is drawn first, so each image keeps its crop: luma barely moves
    w = luma.view(1, 3, 1, 1)
    assert float(((before * w).sum(1) - (after * w).sum(1)).abs().mean()) < 0.05
    # grey pools have no hue: exactly the default's images
    g = base[:, :1]
    g0 = augment_batch(g, (1, 32, 32), AugmentConfig(), torch.Generator().manual_seed(0))
    g1 = augment_batch(g, (1, 32, 32), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(g0, g1)
    with pytest.raises(ConfigError, match="hue"):
        AugmentConfig(hue=0.7)


def test_pd_pool_discards_labels(fmnist_env: Path) -> None:
    imgs = _take("pd:fashion-mnist", (1, 28, 28), 32)
    assert imgs.shape == (32, 1, 28, 28)


@pytest.mark.parametrize("spec", ["tourch", "folder:", "pd:", "npd:x", "noise+"])
def test_unknown_pool_parts_name_the_fix(spec: str) -> None:
    with pytest.raises((ConfigError, DataError), match=r"npd|folder|does not exist"):
        build_pool(PoolConfig(spec=spec), shape=(1, 28, 28))


def test_missing_folder_names_the_fix(tmp_path: Path) -> None:
    pool = build_pool(PoolConfig(spec=f"folder:{tmp_path / 'nope'}"), shape=(1, 28, 28))
    with pytest.raises(DataError, match="does not exist"):
        next(pool.batches(4))


def test_prefetch_keeps_order_raises_errors_and_stops_when_closed() -> None:
    import threading

    from copycat.pools.pool import prefetch

    assert list(prefetch(iter(range(50)))) == list(range(50))

    def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise DataError("bad folder")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(DataError, match="bad folder"):
        next(it)

    def endless():  # type: ignore[no-untyped-def]
        n = 0
        while True:
            n += 1
            yield n

    gen = prefetch(endless())
    assert [next(gen) for _ in range(3)] == [1, 2, 3]
    gen.close()
    assert not any(t.name == "copycat-pool" for t in threading.enumerate())


@pytest.mark.parametrize(
    ("part", "parsed"),
    [
        ("npd", ("npd", "")),
        ("npd:exclude=shirt,dress", ("npd", "exclude=shirt,dress")),
        ("folder:some/dir", ("folder", "some/dir")),
        ("pd:fashion-mnist", ("pd", "fashion-mnist")),
        ("noise", ("noise", "")),
    ],
)
def test_pool_parts_parse_as_their_usage_says(part: str, parsed: tuple[str, str]) -> None:
    from copycat.pools.pool import parse_pool_part

    assert parse_pool_part(part) == parsed


@pytest.mark.parametrize("part", ["npd:", "noise:x", "folder", "pd", "tourch"])
def test_malformed_pool_parts_are_refused(part: str) -> None:
    from copycat.pools.pool import parse_pool_part

    with pytest.raises(ConfigError, match="npd"):
        parse_pool_part(part)


def test_folder_pool_names_each_image_by_its_top_folder(png_folder: Path) -> None:
    """What the store records as each answer's source, and `--selection adaptive`'s arms."""
    pool = build_pool(PoolConfig(spec=f"folder:{png_folder}"), shape=(1, 28, 28))
    names = set(next(pool.batches(200)).sources)
    assert names == {f"folder:{png_folder}", f"folder:{png_folder}/sub"}


def _object_pngs(tmp_path: Path) -> tuple[Path, Path]:
    """A red disc on a transparent page, and a blue square on an opaque white page."""
    disc = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    for y in range(40):
        for x in range(40):
            if (x - 20) ** 2 + (y - 20) ** 2 < 144:
                disc.putpixel((x, y), (220, 20, 20, 255))
    square = Image.new("RGB", (40, 40), (255, 255, 255))
    square.paste((20, 40, 200), (8, 12, 32, 28))
    disc.save(tmp_path / "disc.png")
    square.save(tmp_path / "square.png")
    return tmp_path / "disc.png", tmp_path / "square.png"


@pytest.mark.parametrize("background", ["black", "white"])
def test_colour_objects_keep_their_colours_on_the_background_asked_for(
    tmp_path: Path, background: str
) -> None:
    from copycat.pools.sources import to_base

    disc, square = _object_pngs(tmp_path)
    kw = {"size": 24, "max_pixels": 10**6, "object_crop": True, "background": background}
    red = to_base(disc, channels=3, **kw).int()
    corner = 0 if background == "black" else 255
    assert red[:, 0, 0].tolist() == [corner] * 3  # the page is the background asked for
    assert red[0, 12, 12] > 200 and red[1, 12, 12] < 40 and red[2, 12, 12] < 40  # still red
    blue = to_base(square, channels=3, **kw).int()
    assert blue[2, 12, 12] > 150 and blue[0, 12, 12] < 60  # an opaque image is not inverted
    grey = to_base(disc, channels=1, **kw).int()
    # a grey target's objects are drawn bright on black (inverted), as they are on white
    assert grey[0, 0, 0] == corner and (grey[0, 12, 12] > 150) == (background == "black")


def test_npd_background_option_parses_and_refuses_with_the_fix() -> None:
    from copycat.pools.sources import parse_npd_arg

    assert parse_npd_arg("sets=clipart")["background"] == ("black",)
    assert parse_npd_arg("exclude=shirt;background=white")["background"] == ("white",)
    with pytest.raises(DataError, match=r"background=black .* or background=white"):
        parse_npd_arg("background=grey")


def test_a_plain_npd_pool_adds_pen_strokes_for_grey_targets_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``npd`` (with or without exclude words) draws clip-art and pen strokes, half the pool
    each, for a grey target, clip-art alone for a colour one; sets named outright are drawn as
    named."""
    import copycat.pools.sources as sources

    drawn: list[str] = []

    def bank(npd_set: sources.NpdSet, *, shape: tuple[int, int, int], **_: object) -> object:
        drawn.append(npd_set.name)
        return sources.BankSource(npd_set.name, torch.zeros(4, *shape, dtype=torch.uint8))

    monkeypatch.setattr(sources, "npd_set_source", bank)
    cases = [
        ("npd", (1, 28, 28), ["clipart", "strokes"]),
        ("npd:exclude=shirt,dress", (1, 28, 28), ["clipart", "strokes"]),
        ("npd", (3, 32, 32), ["clipart"]),
        ("npd:sets=clipart", (1, 28, 28), ["clipart"]),
        ("npd:sets=strokes", (3, 32, 32), ["strokes"]),
    ]
    for arg, shape, want in cases:
        drawn.clear()
        src = sources.build_npd(
            arg.removeprefix("npd").lstrip(":"), shape=shape, max_pixels=1 << 20
        )
        assert drawn == want, (arg, shape)
        if len(want) > 1:  # pen strokes half of a grey target's default pool
            assert isinstance(src, sources.WeightedSource)
            assert src.shares() == [("clipart", 0.5), ("strokes", 0.5)], arg
    with pytest.raises(DataError, match="unknown NPD set"):
        sources.parse_npd_arg("sets=")


def test_steals_decoding_the_same_pool_at_once_each_cache_it_whole(
    png_folder: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs that build the same bank at the same moment write it through files of their
    own: neither loses its write, no temporary file is left, and the cache reads back."""
    from concurrent.futures import ThreadPoolExecutor

    from copycat.pools.sources import build_bank

    monkeypatch.setenv("COPYCAT_CACHE", str(tmp_path / "cache"))
    files = sorted(png_folder.rglob("rgb*.png"))
    kw = {"channels": 3, "size": 224, "max_pixels": 10**6, "object_crop": False, "tag": "t"}
    with ThreadPoolExecutor(8) as ex:
        banks = list(ex.map(lambda _: build_bank(files, **kw)[0], range(16)))
    assert "could not cache" not in caplog.text
    cache = tmp_path / "cache"
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]
    again, _, groups = build_bank(files, **kw)  # read from the cache
    assert all(torch.equal(b, again) for b in banks) and len(groups) == len(again) == len(files)
