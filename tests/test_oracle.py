"""Oracles: spec parsing, output restrictions, ONNX parity, safe loading, shape checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from copycat.errors import ConfigError, OracleError
from copycat.oracles.base import Oracle
from copycat.oracles.local import OnnxOracle, TorchOracle
from copycat.oracles.outputs import LabelOnly, Rounded, TopK
from copycat.oracles.registry import parse_oracle_spec

from .conftest import rule_images


def test_default_spec_reveals_the_label_only(victim_dir: Path) -> None:
    oracle = parse_oracle_spec(f"torch:{victim_dir}")
    assert isinstance(oracle, Oracle)
    ans = oracle.query(torch.rand(5, 1, 28, 28))
    assert ans.probs is None and ans.labels.shape == (5,)
    assert oracle.fingerprint.endswith("|label")


@pytest.mark.parametrize("spec", ["tourch:x", "x", "torch:", "ftp://h/x"])
def test_bad_specs_name_the_schemes(spec: str) -> None:
    with pytest.raises(ConfigError, match="torch:"):
        parse_oracle_spec(spec)


def test_bad_output_names_the_choices(victim_dir: Path) -> None:
    with pytest.raises(ConfigError, match="topk:K"):
        parse_oracle_spec(f"torch:{victim_dir}", output="top3")


def test_restrictions(victim: TorchOracle) -> None:
    x = torch.rand(16, 1, 28, 28)
    full = victim.query(x)
    assert full.probs is not None
    assert torch.allclose(full.probs.sum(1), torch.ones(16), atol=1e-5)
    top2 = TopK(victim, 2).query(x)
    assert top2.probs is not None
    assert ((top2.probs > 0).sum(1) <= 2).all()
    assert torch.equal(top2.labels, full.labels)
    r = Rounded(victim, 1).query(x)
    assert r.probs is not None and torch.equal(r.probs, torch.round(r.probs, decimals=1))
    assert LabelOnly(victim).query(x).probs is None


def test_onnx_export_agrees_with_torch(victim_dir: Path) -> None:
    x, _ = rule_images(64, 5)
    xf = x.float() / 255
    t = TorchOracle(victim_dir).query(xf)
    o = OnnxOracle(victim_dir / "model.onnx").query(xf)
    assert torch.equal(t.labels, o.labels)
    assert o.probs is not None and t.probs is not None
    assert torch.allclose(t.probs, o.probs, atol=1e-4)
    assert OnnxOracle(victim_dir / "model.onnx").input_shape == (1, 28, 28)


def test_target_reaches_its_rule(victim_dir: Path) -> None:
    card = json.loads((victim_dir / "card.json").read_text())
    assert card["test_accuracy"] > 0.8  # the victim really learned its rule


def test_wrong_channels_are_refused_and_other_sizes_resized(victim: TorchOracle) -> None:
    with pytest.raises(OracleError, match="1-channel"):
        victim.query(torch.rand(2, 3, 28, 28))
    with pytest.raises(OracleError, match=r"\(N, C, H, W\)"):
        victim.query(torch.rand(28, 28))
    assert victim.query(torch.rand(2, 1, 40, 40)).labels.shape == (2,)


def test_uint8_pixels_are_scaled_and_out_of_range_floats_refused(victim: TorchOracle) -> None:
    images, _ = rule_images(64, 9)  # uint8
    as_float = victim.query(images.float() / 255)
    assert torch.allclose(victim.query(images).probs, as_float.probs)  # was clamped to 0/1
    with pytest.raises(OracleError, match=r"divide 0\.\.255 pixels by 255"):
        victim.query(images.float())
    with pytest.raises(OracleError, match="NaN"):
        victim.query(torch.full((1, 1, 28, 28), float("nan")))


def test_missing_or_tampered_target_names_the_fix(tmp_path: Path, victim_dir: Path) -> None:
    with pytest.raises(OracleError, match="copycat target train"):
        _ = TorchOracle(tmp_path / "none").num_classes
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "card.json").write_text((victim_dir / "card.json").read_text())
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(OracleError):
        TorchOracle(bad).query(torch.rand(1, 1, 28, 28))


def test_a_target_onnx_cannot_export_is_published_for_torch_with_a_one_line_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from copycat.config import TrainConfig
    from copycat.data.datasets import LabelledSet
    from copycat.targets.publish import train_target

    # cnn-small pools 8x8 features to 7x7 at 32x32 pixels, which ONNX cannot express
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 32, 32), generator=g, dtype=torch.uint8)
    data = LabelledSet(images, torch.arange(32) % 4, ("a", "b", "c", "d"), "grey32")
    cfg = TrainConfig(arch="cnn-small", epochs=1, batch_size=16, device="cpu", val_fraction=0.0)
    with caplog.at_level("WARNING", logger="copycat"):
        train_target(data, data, out=tmp_path / "t", config=cfg)
    (warning,) = [r.getMessage() for r in caplog.records if "no ONNX export" in r.getMessage()]
    assert "\n" not in warning and f"torch:{tmp_path / 't'}" in warning
    assert not (tmp_path / "t" / "model.onnx").exists()
    assert TorchOracle(tmp_path / "t").query(images[:4].float() / 255).labels.shape == (4,)
