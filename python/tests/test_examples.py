"""The examples and the tutorial notebook run (at small sizes) and say what they should."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
from nbclient import NotebookClient


def run_example(root, name, *args):
    r = subprocess.run(
        [sys.executable, root / "examples" / "python" / name, *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_salib_example_prints_sobol_indices(root):
    out = run_example(root, "sobol.py", "8", "3000")
    for factor in ["targeting.ctr_customer", "market.bidders_custom_audience"]:
        assert factor in out
    assert "S1" in out and "ST" in out


def test_the_root_finding_example_finds_a_rate_inside_the_range(root):
    out = run_example(root, "half_gain.py", "3000")
    line = [l for l in out.splitlines() if l.startswith("half of it remains")][0]
    rate = float(line.rsplit(" ", 1)[1])
    assert 0.0 < rate < 1.0


def test_the_tutorial_notebook_runs_headless(root, tmp_path):
    nb = nbformat.read(root / "docs" / "tutorial.ipynb", as_version=4)
    # Committed without outputs, so that git shows only the code.
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    os.environ["ADSIM_TUTORIAL_USERS"] = "4000"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
