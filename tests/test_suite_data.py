"""The development suite's labelled sets: seeded splits (validation carved from training data,
never from test), digits, emoji by category and ImageFolder trees, on tiny seeded fixtures
written in tmp_path (no Debian or npm data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from copycat.cli.main import app
from copycat.data.datasets import carve, load_labelled
from copycat.data.suite import EMOJI_CATEGORIES, digits_from_arrays, emoji_in_split
from copycat.errors import ConfigError, DataError


def test_carve_is_disjoint_stratified_and_seeded() -> None:
    labels = torch.arange(10).repeat_interleave(50)
    parts = carve(labels, val=0.1, test=0.2)
    together = torch.cat(list(parts.values()))
    assert sorted(together.tolist()) == list(range(500))  # every image once
    for name, share in (("val", 5), ("test", 10), ("train", 35)):
        assert torch.bincount(labels[parts[name]], minlength=10).tolist() == [share] * 10
    again = carve(labels, val=0.1, test=0.2)
    assert all(torch.equal(parts[k], again[k]) for k in parts)
    other = carve(labels, val=0.1, test=0.2, seed=1)
    assert not torch.equal(parts["val"], other["val"])


def test_fashion_mnist_val_is_carved_from_train(fmnist_env: Path) -> None:
    train, val = load_labelled("fashion-mnist:train"), load_labelled("fashion-mnist:val")
    test = load_labelled("fashion-mnist:test")
    assert len(train) + len(val) == 2000 and len(val) == pytest.approx(200, abs=10)
    assert len(test) == 400  # the test split is untouched
    rows = {tuple(x.flatten().tolist()) for x in train.images}
    assert not any(tuple(x.flatten().tolist()) in rows for x in val.images)
    with pytest.raises(ConfigError, match="fashion-mnist:val"):
        load_labelled("fashion-mnist:dev")
    with pytest.raises(ConfigError, match="digits"):
        load_labelled("mnist:test")


def test_digits_are_upscaled_and_centred() -> None:
    rng = np.random.default_rng(0)
    ds = digits_from_arrays(rng.integers(0, 17, (6, 8, 8)), np.arange(6))
    assert ds.images.shape == (6, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.images[:, :, :4].sum() == 0 and ds.images[:, :, :, 24:].sum() == 0  # MNIST margin
    assert int(ds.images.max()) > 200
    assert ds.labels.tolist() == list(range(6))


def test_digits_splits() -> None:
    pytest.importorskip("sklearn")
    sizes = {s: len(load_labelled(f"digits:{s}")) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] > sizes["val"] > 100


def _emoji_package(root: Path, style: str, n: int = 30) -> None:
    """A tiny emoji-datasource package: coloured shapes per category, one Component swatch
    and one entry without an image in this style."""
    rng = np.random.default_rng(1)
    img_dir = root / f"emoji-datasource-{style}" / "img" / style / "64"
    img_dir.mkdir(parents=True)
    entries = []
    for i in range(n):
        cat = EMOJI_CATEGORIES[i % 3]
        arr = np.zeros((64, 64, 4), np.uint8)
        arr[16:48, 16:48, i % 3] = 255
        arr[16:48, 16:48, 3] = 255
        arr[rng.integers(0, 64), rng.integers(0, 64)] = 255
        Image.fromarray(arr, "RGBA").save(img_dir / f"e{i}.png")
        entries.append(
            {
                "unified": f"1F{i:03X}",
                "image": f"e{i}.png",
                "category": cat,
                f"has_img_{style}": True,
            }
        )
    Image.fromarray(np.zeros((64, 64, 4), np.uint8), "RGBA").save(img_dir / "tone.png")
    entries.append(
        {"unified": "1F3FB", "image": "tone.png", "category": "Component", f"has_img_{style}": True}
    )
    entries.append({"unified": "2000", "image": "x.png", "category": "Objects"})
    (root / f"emoji-datasource-{style}" / "emoji.json").write_text(json.dumps(entries))


def test_emoji_by_category_split_by_emoji(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYCAT_DATA", str(tmp_path))
    monkeypatch.setenv("COPYCAT_CACHE", str(tmp_path / "empty-cache"))
    _emoji_package(tmp_path, "google")
    _emoji_package(tmp_path, "twitter")
    splits = {s: load_labelled(f"emoji:{s}") for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 60  # 30 emoji x 2 styles; Component left out
    for d in splits.values():
        assert d.images.shape[1:] == (3, 32, 32) and d.class_names == EMOJI_CATEGORIES
        assert int(d.labels.max()) <= 2
    expected_test = sum(emoji_in_split(f"1F{i:03X}") == "test" for i in range(30))
    assert len(splits["test"]) == 2 * expected_test  # both styles of an emoji in one split
    sample = splits["train"].images[0]
    assert sample[:, 0, 0].sum() == 0  # transparent corners composited onto black


def test_missing_emoji_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYCAT_DATA", str(tmp_path))
    monkeypatch.setenv("COPYCAT_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="npm pack emoji-datasource-google"):
        load_labelled("emoji:test")


def test_target_train_on_an_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for c, colour in enumerate(("red", "blue")):
        (tmp_path / "data" / colour).mkdir(parents=True)
        for i in range(20):
            arr = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            arr[..., 2 * c] = 230
            Image.fromarray(arr).save(tmp_path / "data" / colour / f"{i}.png")
    out = tmp_path / "target"
    res = CliRunner().invoke(
        app,
        [
            "target", "train", "--dataset", f"folder:{tmp_path / 'data'}", "--out", str(out),
            "--epochs", "3", "--arch", "cnn-tiny", "--device", "cpu", "--input-shape", "3,16,16",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output + repr(res.exception)
    card = json.loads((out / "card.json").read_text())
    assert card["class_names"] == ["blue", "red"] and card["input_shape"] == [3, 16, 16]
    assert card["test_accuracy"] >= 0.75  # colour is easy; 8 test images
    val = load_labelled(f"folder:{tmp_path / 'data'}", input_shape=(3, 16, 16))
    assert len(val) == 40  # a folder: test set is the whole tree


def test_npd_exclusion_by_path_words(tmp_path: Path) -> None:
    from copycat.pools.sources import build_npd, exclude_files

    files = [tmp_path / p for p in ("people/clothing/hat.png", "animals/cat.png", "x/T-Shirt.png")]
    kept = exclude_files(files, tmp_path, ("people/clothing", "shirt"))
    assert kept == [tmp_path / "animals/cat.png"]
    with pytest.raises(DataError, match="npd:exclude=WORD"):
        build_npd("without=shirt", shape=(1, 28, 28), max_pixels=10**7)


def _npd_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two NPD sets in tmp folders: objects (small shapes on transparent canvases, one of them
    a shirt) and photos (two large gradients); a third set is not installed."""
    from PIL import Image

    from copycat.pools import sources

    rng = np.random.default_rng(0)
    objects = tmp_path / "objects"
    (objects / "clothes").mkdir(parents=True)
    for i in range(6):
        img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
        img.paste((255, 0, 0, 255), (5 + i, 5, 20 + i, 30))
        img.save(objects / ("clothes/shirt.png" if i == 0 else f"thing{i}.png"))
    (objects / "sound.ogg").write_bytes(b"OggS")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        arr = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(arr).save(photos / f"wall{i}.jpg")
    monkeypatch.setenv("COPYCAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "skimage_photos", lambda: [])
    monkeypatch.setattr(
        sources,
        "NPD_SETS",
        (
            sources.NpdSet("clipart", (objects,), "objects", "pkg-objects"),
            sources.NpdSet("stamps", (tmp_path / "absent",), "objects", "pkg-absent"),
            sources.NpdSet("photos", (photos,), "photos", "pkg-photos", crops=5),
        ),
    )


def test_npd_sets_mix_equally_and_exclude_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from copycat.pools.sources import WeightedSource, build_npd

    _npd_sets(tmp_path, monkeypatch)
    with caplog.at_level("WARNING"):
        src = build_npd("sets=all;exclude=shirt", shape=(3, 16, 16), max_pixels=10**7)
    assert "pkg-absent" in caplog.text  # a set not installed is named with its package
    assert isinstance(src, WeightedSource)
    clip, photos = src.sources
    assert len(clip.bank) == 5 and len(photos.bank) == 10  # shirt out; 2 photos x 5 crops
    assert not clip.skipped  # the .ogg beside the images is not a skipped image
    assert len({bytes(t.numpy()) for t in photos.bank}) == 10  # every crop differs
    drawn, _ = src.draw_named(2000, torch.Generator().manual_seed(0))
    from_clip = sum(any(torch.equal(d, c) for c in clip.bank) for d in drawn[:400])
    assert 150 <= from_clip <= 250  # the sets are drawn equally often, not by file count
    default = build_npd("", shape=(3, 16, 16), max_pixels=10**7)
    assert default.name == "clipart" and len(default.bank) == 6  # the default: clip-art only
    # each image is named by its set and top folder ("-": directly in the set's folder)
    assert sorted(default.groups or []) == ["-"] * 5 + ["clothes"]
    _, names = src.draw_named(50, torch.Generator().manual_seed(1))
    assert set(names) == {"clipart/-", "photos/-"}
    only = build_npd("sets=photos", shape=(1, 16, 16), max_pixels=10**7)
    assert only.name == "photos" and tuple(only.bank.shape) == (10, 1, 32, 32)
    again = build_npd("sets=photos", shape=(1, 16, 16), max_pixels=10**7)
    assert torch.equal(only.bank, again.bank)  # crops are seeded (and cached)


def test_procedural_sets_are_drawn_seeded_bright_on_black_and_need_no_package(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from copycat.pools.procedural import procedural_bank
    from copycat.pools.sources import build_npd

    for name, groups in (("strokes", {"curves"}), ("shapes", {"blobs", "leaves"})):
        for channels in (1, 3):
            bank, names = procedural_bank(name, size=32, channels=channels, count=60)
            again, _ = procedural_bank(name, size=32, channels=channels, count=60)
            assert bank.dtype == torch.uint8 and tuple(bank.shape) == (60, channels, 32, 32)
            assert torch.equal(bank, again) and set(names) == groups  # seeded; groups in turn
            assert len({bytes(t.numpy()) for t in bank}) == 60  # every image differs
            lit = (bank.amax(1) > 0).float().mean((1, 2))  # share of lit pixels per image
            assert bool((lit > 0).all())  # none is blank
    strokes, _ = procedural_bank("strokes", size=32, channels=1, count=60)
    assert float((strokes > 0).float().mean()) < 0.4  # thin strokes on black
    with caplog.at_level("WARNING"):
        # exclusions name files: a drawn set has none, so it is drawn whole
        src = build_npd("sets=strokes,shapes;exclude=curves", shape=(1, 16, 16), max_pixels=10**7)
    assert "not installed" not in caplog.text  # nothing to install
    _, names = src.draw_named(400, torch.Generator().manual_seed(0))
    counts = {n: names.count(n) for n in set(names)}
    assert set(counts) == {"strokes/curves", "shapes/blobs", "shapes/leaves"}
    assert 150 <= counts["strokes/curves"] <= 250  # the two sets drawn equally often
    # weights in the order the sets are named, whatever order the sets are listed in
    src = build_npd("sets=shapes,strokes;weights=1,3", shape=(1, 16, 16), max_pixels=10**7)
    _, names = src.draw_named(400, torch.Generator().manual_seed(0))
    assert 270 <= sum(n.startswith("strokes/") for n in names) <= 330  # three in four


@pytest.mark.parametrize(
    "arg",
    [
        "weights=1,2",  # no sets named
        "sets=all;weights=1",
        "sets=clipart,strokes;weights=1",
        "sets=clipart,strokes;weights=1,x",
        "sets=clipart,strokes;weights=1,0",
        "sets=clipart,strokes;weights=1,nan",
        "sets=clipart,clipart;weights=1,2",
    ],
)
def test_npd_weights_refused_unless_one_positive_number_per_named_set(arg: str) -> None:
    from copycat.pools.sources import parse_npd_arg

    with pytest.raises(DataError, match=r"weights=.*sets=clipart,strokes;weights=3,1"):
        parse_npd_arg(arg)


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("sets=clipart;sets=photos", "npd:sets=SET"),
        ("sets=flowers", "unknown NPD set"),
        ("sets=", "unknown NPD set"),
        ("include=x", "npd:exclude=WORD"),
    ],
)
def test_npd_arguments_refused_with_the_fix(arg: str, match: str) -> None:
    from copycat.pools.sources import parse_npd_arg

    with pytest.raises(DataError, match=match):
        parse_npd_arg(arg)


def test_demo_pool_leaves_out_the_suites_garments() -> None:
    """`make demo`, configs/demo.toml and the suite's Fashion-MNIST target steal with one pool."""
    import re
    import tomllib

    from copycat.targets.suite import suite_target

    root = Path(__file__).resolve().parents[1]
    make_pool = re.search(r"^POOL\s*\?=\s*(\S+)$", (root / "Makefile").read_text(), re.M)
    toml_pool = tomllib.loads((root / "configs/demo.toml").read_text())["pool"]["spec"]
    assert make_pool is not None
    assert make_pool.group(1) == toml_pool == suite_target("fmnist").npd_pool


def test_photo_crops_of_a_tiny_or_odd_photo(tmp_path: Path) -> None:
    from copycat.pools.sources import photo_crops

    for w, h in ((5, 3), (300, 9), (64, 64)):
        f = tmp_path / f"p{w}x{h}.png"
        Image.fromarray(np.full((h, w, 3), 128, dtype=np.uint8)).save(f)
        crops = photo_crops(f, channels=1, size=16, max_pixels=10**7, n=4)
        assert [tuple(c.shape) for c in crops] == [(1, 16, 16)] * 4


def test_the_check_targets_swap_the_core_targets_architectures_and_are_built_when_named(
    tmp_path: Path,
) -> None:
    from copycat.oracles.local import TargetCard
    from copycat.targets.suite import SUITE, build_suite, suite_target

    core = {t.name: t for t in SUITE if t.core}
    assert list(core) == ["fmnist", "digits", "emoji"]
    for check, of in (("fmnist-wide", "fmnist"), ("emoji-small", "emoji")):
        c, o = suite_target(check), core[of]
        assert not c.core and c.dataset == o.dataset and c.exclude == o.exclude
        assert {c.train.arch, o.train.arch} == {"cnn-target", "cnn-wide"}
    resnet = suite_target("digits-resnet")  # a third architecture, the copies' candidates' unlike
    assert not resnet.core and resnet.train.arch == "resnet18"
    assert (resnet.dataset, resnet.exclude) == (core["digits"].dataset, core["digits"].exclude)
    # every core target's card already there: nothing is trained, and no check is built
    for name in core:
        (tmp_path / name).mkdir()
        card = TargetCard(
            name=name,
            arch="cnn-target",
            class_names=("a", "b"),
            input_shape=(1, 28, 28),
            mean=(0.5,),
            std=(0.25,),
        )
        card.save(tmp_path / name)
    assert list(build_suite(tmp_path)) == list(core)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(core)
