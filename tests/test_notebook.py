"""examples/quickstart.ipynb runs top to bottom in a fresh kernel, shows progress and figures."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs_with_progress_and_plots():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel is this interpreter (the .venv), as a user's notebook would be
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3")
    t0 = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - t0
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "epoch" in stderr and "cells/s" in stderr, stderr[-500:]
    assert "TqdmWarning" not in stderr and "IProgress" not in stderr
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # scatter, heatmap, loss: each shown once
    fitted = nb.cells[5].outputs[-1]["data"]["text/plain"]
    assert fitted.startswith("PerturbationRegressor(") and "GeneTokenModel" not in fitted
    print(f"notebook ran in {seconds:.1f} s")
