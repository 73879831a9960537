"""The C allocator's settings (copycat.allocator), each case in a fresh interpreter: they are
process-wide and set once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from copycat import allocator

# Scores 2,048 images three times at the scoring batch of 1,024, as the architecture's choice
# and the steal's selection do (each batch's activations are tens of megabytes), after a
# first pass, and prints what tune_allocator said and the page faults the three passes took.
PROBE = """
import json, resource, torch
from copycat.allocator import tune_allocator
from copycat.train.fit import predict
from copycat.train.models import build_model
outcome = tune_allocator()
model = build_model("cnn-small", in_channels=1, num_classes=10, input_size=28)
images = torch.zeros(2048, 1, 28, 28, dtype=torch.uint8)
predict(model, images, device=torch.device("cpu"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    predict(model, images, device=torch.device("cpu"))
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"outcome": outcome, "again": tune_allocator(), "faults": faults}))
"""

GLIBC = bool(getattr(os, "confstr", None) and os.confstr("CS_GNU_LIBC_VERSION"))


def probe(**env: str) -> dict[str, object]:
    unset = (allocator.ENV_SWITCH, *allocator._GLIBC_ENV)
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    tuned = probe()
    untuned = probe(COPYCAT_MALLOC_TUNING="off")
    assert tuned["outcome"] == tuned["again"] == "tuned"
    assert untuned["outcome"] == "off"
    # untuned, every activation above 32 MiB is mapped afresh and faulted in page by page
    # (about 800,000 faults here); tuned, the first pass's memory is reused
    assert untuned["faults"] > 100_000
    assert tuned["faults"] * 20 < untuned["faults"]


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_glibc_settings_from_the_environment_win() -> None:
    given = probe(MALLOC_TRIM_THRESHOLD_="131072")
    assert given["outcome"] == "glibc settings from the environment"


def test_every_command_tunes_the_allocator_first(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import copycat
    from copycat.cli.main import app

    assert copycat.tune_allocator is allocator.tune_allocator  # the public name
    # off here: this test's process is shared, and the setting cannot be undone
    monkeypatch.setenv(allocator.ENV_SWITCH, "off")
    allocator.tune_allocator.cache_clear()
    try:
        CliRunner().invoke(app, ["status", str(tmp_path)])
        assert allocator.tune_allocator.cache_info().currsize == 1  # the command called it
        assert allocator.tune_allocator() == "off"
    finally:
        allocator.tune_allocator.cache_clear()
