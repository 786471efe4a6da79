"""`sktx.write_submission` and `sktx submit`: a validated 2026 submission file."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import DATA, _need

import sktx
from sktx.baselines import MeanBaseline
from sktx.data import DataContractError
from sktx.submission import read_gene_names, read_perturbations, write_submission

pytest.importorskip("cell_eval2")

H1 = DATA / "vcc2025_h1_subset.h5ad"
KEYS = {"perturbation_key": "target_gene", "control_label": "non-targeting"}
TARGETS = ["MED12", "SRC", "STAT1", "TET1", "TMSB4X"]


@pytest.fixture(scope="module")
def h1():
    return ad.read_h5ad(_need(H1))


@pytest.fixture(scope="module")
def controls(h1):
    return h1[(h1.obs["target_gene"] == "non-targeting").to_numpy()].copy()


@pytest.fixture(scope="module")
def files(h1, tmp_path_factory):
    d = tmp_path_factory.mktemp("vcc")
    genes = d / "gene_names.csv"
    genes.write_text("\n".join(h1.var_names) + "\n")
    perts = d / "pert_counts.csv"
    perts.write_text(
        "target_gene,n_cells\n" + "".join(f"{t},{30 + i}\n" for i, t in enumerate(TARGETS))
    )
    return genes, perts


@pytest.mark.slow
def test_end_to_end_train_submit_score_with_cell_eval2(h1, controls, files, tmp_path):
    """Train on the H1 sample, write the submission, score it with cell-eval2 (vcc2026)."""
    from dataclasses import replace

    from cell_eval2 import EvalConfig, compute_metrics

    genes, perts = files
    panel = sktx.GeneSelector(n_genes=60, **KEYS).fit(h1).selected_genes_
    model = sktx.PerturbationRegressor(max_epochs=1, set_size=8, random_state=0, **KEYS)
    model.fit(h1[:, panel].copy())
    path = tmp_path / "submission.h5ad"
    sub = write_submission(model, controls, perts, genes, path, random_state=0)
    back = ad.read_h5ad(path)
    assert list(back.var_names) == list(h1.var_names)
    assert back.obs["target_gene"].value_counts().to_dict() == {
        t: 30 + i for i, t in enumerate(TARGETS)
    }
    assert back.X.format == "csr" and np.array_equal(back.X.data, np.round(back.X.data))
    assert (back.X != sub.X).nnz == 0
    # score it as the platform does: the real controls appended, cell-eval2's preset
    pred = ad.concat([back, controls[:, back.var_names]], index_unique="-")
    pred.obs = pred.obs[["target_gene"]]
    cfg = EvalConfig.from_preset("vcc2026")
    cfg = replace(cfg, pert_col="target_gene", device="cpu", de=replace(cfg.de, backend="pdex"))
    scored = compute_metrics(pred, h1, config=cfg)
    assert {"pds_cosine", "de_wilcoxon_sig_jaccard"} <= set(scored["metric"].to_list())


def test_submission_is_reproducible_and_atomic(h1, controls, files, tmp_path):
    genes, _ = files
    model = MeanBaseline(**KEYS).fit(h1)
    a = write_submission(model, controls, ["SRC"], genes, tmp_path / "a.h5ad", n_cells=20)
    b = write_submission(model, controls, ["SRC"], genes, tmp_path / "b.h5ad", n_cells=20)
    assert (a.X != b.X).nnz == 0
    assert sorted(os.listdir(tmp_path)) == ["a.h5ad", "b.h5ad"]  # no temporary file left


def test_contexts_get_their_own_cells_and_column(h1, controls, files, tmp_path):
    genes, _ = files
    two = ad.concat({"H1": controls, "H9": controls}, label="line", index_unique="-")
    model = MeanBaseline(**KEYS).fit(h1)
    sub = write_submission(
        model, two, {"SRC": 10, "TET1": 5}, genes, tmp_path / "s.h5ad", context_key="line"
    )
    table = pd.crosstab(sub.obs["target_gene"], sub.obs["context"])
    assert table.loc["SRC"].tolist() == [10, 10] and table.loc["TET1"].tolist() == [5, 5]


def test_invalid_submission_is_not_written(h1, controls, files, tmp_path, monkeypatch):
    import sktx.submission as submission

    genes, _ = files
    model = MeanBaseline(**KEYS).fit(h1)

    def too_deep(adata, genes, **_):
        from cell_eval2 import norm

        norm.check_scale_limit(adata, "counts", 10.0)  # every cell is above 10 counts

    monkeypatch.setattr(submission, "validate_submission", too_deep)
    with pytest.raises(ValueError, match="exceeds max_counts_per_cell"):
        write_submission(model, controls, ["SRC"], genes, tmp_path / "x.h5ad", n_cells=5)
    assert os.listdir(tmp_path) == []


def test_clear_errors(h1, controls, tmp_path):
    model = MeanBaseline(**KEYS).fit(h1)
    with pytest.raises(DataContractError, match="reference genes are not in the control cells"):
        write_submission(model, controls, ["SRC"], [*h1.var_names, "NOTAGENE"], tmp_path / "x")
    log1p = sktx.log_normalize(controls)
    log1p = ad.AnnData(log1p.X, obs=log1p.obs, var=log1p.var, uns={"log1p": {"base": None}})
    with pytest.raises(DataContractError, match="log1p values only"):
        write_submission(model, log1p, ["SRC"], list(h1.var_names), tmp_path / "x")
    with pytest.raises(DataContractError, match="at least one cell"):
        read_perturbations({"SRC": 0}, 400)
    with pytest.raises(DataContractError, match="each gene once"):
        read_gene_names(["A", "A"])


def test_read_perturbations_and_gene_names(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("SRC,12\nTET1\n")
    assert read_perturbations(csv, 400) == {"SRC": 12, "TET1": 400}
    genes = tmp_path / "g.csv"
    genes.write_text("gene_name\nA\nB\n")
    assert read_gene_names(genes) == ["A", "B"]
    assert read_gene_names(Path(genes)) == ["A", "B"]


def test_cli_submit(h1, controls, files, tmp_path):
    from typer.testing import CliRunner

    from sktx.cli import app
    from sktx.cli._io import _MODEL_FILE, _save_model

    genes, perts = files
    run = tmp_path / "run"
    run.mkdir()
    _save_model(MeanBaseline(**KEYS).fit(h1), run / _MODEL_FILE)  # what `sktx train` writes
    ctrl_path = tmp_path / "controls.h5ad"
    controls.write_h5ad(ctrl_path)
    out = tmp_path / "sub.h5ad"
    res = CliRunner().invoke(
        app,
        ["submit", "--model", str(run), "--controls", str(ctrl_path), "--perturbations",
         str(perts), "--genes", str(genes), "--out", str(out), "--seed", "0"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "validated with cell-eval2" in res.output
    back = ad.read_h5ad(out)
    assert back.n_obs == sum(30 + i for i in range(5)) and back.n_vars == h1.n_vars


def test_an_unseen_line_starts_from_all_its_controls_in_every_batch(
    h1, controls, files, tmp_path, monkeypatch
):
    # the 2026 zero-shot case: the submission's line was never fitted. Its basal is
    # the mean of all its control cells in every batch the submission is predicted in,
    # not the mean of one batch's query cells
    import sktx.submission as submission
    from sktx._counts import predict_output
    from sktx.context import UnseenContextWarning, given_basal

    genes, _ = files
    fitted = h1.copy()
    fitted.obs["line"] = "H1"
    model = MeanBaseline(**KEYS, cell_type_key="line").fit(fitted)
    new = controls.copy()
    new.obs["line"] = "H9"
    expected = predict_output(model, new, output="log1p").X.mean(0)
    seen, predict = [], model.predict

    def spy(query, **kwargs):
        seen.append(given_basal("H9", len(model.feature_names_in_)))
        return predict(query, **kwargs)

    monkeypatch.setattr(model, "predict", spy)
    monkeypatch.setattr(submission, "_BATCH", 1)
    with pytest.warns(UnseenContextWarning, match="H9"):
        write_submission(model, new, {"SRC": 6, "TET1": 4}, genes, tmp_path / "s.h5ad")
    batches = [v for v in seen if v is not None]
    assert len(batches) >= 2  # one call per target, besides the control means' calls
    for value in batches:
        np.testing.assert_allclose(value, expected, rtol=1e-6)
