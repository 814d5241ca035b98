"""Shared fixtures: the repository's paths and the command line's binary."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def adsim_bin() -> Path:
    """The command line built from the same sources (`cargo build --release`); ADSIM_BIN
    names another."""
    path = Path(os.environ.get("ADSIM_BIN", ROOT / "target" / "release" / "adsim"))
    if not path.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "adsim"], cwd=ROOT, check=True)
    return path
