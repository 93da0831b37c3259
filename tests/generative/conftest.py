"""Fixtures shared by the generative tests: one home where the tiny recipes train once per run."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The home of the tiny VAE, the tiny learned watermark and the tiny detector (trained on first use)."""
    return tmp_path_factory.mktemp("gen-tiny-home")
