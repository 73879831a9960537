"""Checks that cannot pass by skipping: in CI the MLServer interop test runs or fails."""

from __future__ import annotations

import pytest

from .test_interop_mlserver import unavailable


def test_interop_fails_instead_of_skipping_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true .* no index"):
        unavailable("no index")


def test_interop_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no index"):
        unavailable("no index")
