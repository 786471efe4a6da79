"""Held-out quality of PerturbationRegressor vs fair baselines on every shared dataset.

Every real dataset of the shared folder (Norman 2019 K562, the three McFaline 2024
glioma lines, Datlinger 2017 Jurkat, the VCC 2025 H1 subset) and the simulator at
150 perturbations. Per dataset, 5-fold ``PerturbationSplit(shuffle=True,
random_state=0)`` over perturbations: the same folds for every model. Each model is
fitted once per fold and predicts the held-out perturbations once from the test
split's controls (``make_query``); all metrics (cell-eval definitions,
``sktx.metrics``) and the VCC score come from that one prediction. Every baseline
builds its cells the way the model does (``cells="controls"``: the query's control
cells carried to the predicted mean, zeros kept), so DES compares like with like.

    python benchmarks/bench_quality.py                              # everything
    python benchmarks/bench_quality.py --datasets norman_k562 datlinger --models knn model
    python benchmarks/bench_quality.py --list                       # names
    python benchmarks/bench_quality.py --doc     # quality section of docs/performance.md

Results are merged into ``benchmarks/results/quality.json`` per (dataset, model), so a
dataset or a model can be re-run alone (e.g. after a change of the model), and the
tables are rebuilt from everything stored. Importable: ``run(["vcc_h1"], ["knn"])``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import GO_BP, RESULTS, SHARED, peak_rss_gb, write_result

HALLMARK = SHARED / "genesets" / "msigdb_hallmark_v7.0.gmt"
NORMAN = SHARED / "data" / "norman2019_mcfaline2023_devel.h5ad"
DATLINGER = SHARED / "data" / "datlinger2017_jurkat.h5ad"
H1 = SHARED / "data" / "vcc2025_h1_subset.h5ad"
RESULT = "quality"

#: name -> (role, description). "tune": may be looked at when choosing defaults (as in
#: bench_tuning.py); "test": only measured.
DATASETS = {
    "norman_k562": ("test", "Norman 2019 K562, 33 perturbations (15 combinations), 500 HVGs"),
    "mcfaline_A172": ("test", "McFaline 2024 A172 glioma, 9 KOs, 500 HVGs"),
    "mcfaline_T98G": ("test", "McFaline 2024 T98G glioma, 9 KOs, 500 HVGs"),
    "mcfaline_U87MG": ("test", "McFaline 2024 U87MG glioma, 9 KOs, 500 HVGs"),
    "datlinger": ("tune", "Datlinger 2017 Jurkat, 20 KOs, 500 HVGs of 2,000 (raw counts)"),
    "vcc_h1": ("test", "VCC 2025 H1 subset, 5 CRISPRi targets, 1,000 genes (raw counts)"),
    "sim150": ("tune", "make_perturbseq: 120 singles + 30 combinations, 500 genes"),
}

#: (column, key in a fold's record, smaller is better)
METRICS = [
    ("DES", "des", False),
    ("PDS", "pds", False),
    ("MAE", "mae", True),
    ("Pearson delta", "pearson_delta", False),
    ("top-20 DE MSE", "top_de_mse", True),
    ("VCC score", "vcc", False),
]
#: metrics of the wins/ties/losses statement (issue 18: DES, PDS, MAE and the VCC score)
VERDICT_METRICS = ("des", "pds", "mae", "vcc")
MODEL, START = "model", "model_0"
#: the start of the 2026 edition (``start="knn"``: unshrunk neighbour effects)
KNN_MODEL, KNN_START = "model_knn", "model_knn_0"


def load(name: str):
    """The AnnData and estimator keys of one dataset (read from the shared folder)."""
    import anndata as ad

    if name == "datlinger":
        import scanpy as sc

        from sktx.datasets import load_h5ad

        keys = {"perturbation_key": "target_gene", "control_label": "control"}
        adata = load_h5ad(DATLINGER, **keys)
        # the 500 HVGs of bench_tuning.py (scanpy seurat flavour on log1p)
        sc.pp.highly_variable_genes(adata, n_top_genes=500)
        return adata[:, adata.var["highly_variable"].to_numpy()].copy(), keys
    if name == "sim150":
        from sktx.datasets import make_perturbseq

        keys = {"perturbation_key": "target_gene", "control_label": "non-targeting"}
        adata = make_perturbseq(
            n_cells=6000, n_genes=500, n_perturbations=120, n_combinations=30, random_state=0
        )
        return adata, keys
    if name == "vcc_h1":
        keys = {"perturbation_key": "target_gene", "control_label": "non-targeting"}
        return ad.read_h5ad(H1), keys
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
    full = ad.read_h5ad(NORMAN)
    ct = "k562" if name == "norman_k562" else name.split("_", 1)[1]
    keys = {"perturbation_key": "perturbation", "control_label": "control"}
    return full[(full.obs["cell_type"] == ct).to_numpy()].copy(), keys


def regressor(keys: dict, epochs: int | None, **params):
    """The default PerturbationRegressor with GO BP as prior (the documented setting)."""
    from sktx.regressor import PerturbationRegressor

    base = dict(**keys, gene_sets=str(GO_BP), n_jobs=1, random_state=0)
    if epochs is not None:
        base["max_epochs"] = epochs
    return PerturbationRegressor(**{**base, **params})


def models(keys: dict, epochs: int | None = None) -> dict:
    """Model name -> factory. Baselines build cells as the model does (``cells="controls"``)."""
    from sktx import baselines as b

    fair = {"cells": "controls", **keys}
    return {
        "control": lambda: b.ControlBaseline(**keys),  # its cells are the controls themselves
        "mean": lambda: b.MeanBaseline(**fair),
        "additive": lambda: b.AdditiveBaseline(**fair),
        "additive_joint": lambda: b.AdditiveBaseline(effects="joint", **fair),
        "linear": lambda: b.LinearBaseline(prior_gene_sets=str(GO_BP), **fair),
        "knn": lambda: b.KNNBaseline(gene_sets=[str(GO_BP), str(HALLMARK)], **fair),
        START: lambda: regressor(keys, 0),
        MODEL: lambda: regressor(keys, epochs),
        KNN_START: lambda: regressor(keys, 0, start="knn"),
        KNN_MODEL: lambda: regressor(keys, epochs, start="knn"),
    }


#: display names of the models in the tables
LABELS = {
    "control": "ControlBaseline",
    "mean": 'MeanBaseline(cells="controls")',
    "additive": 'AdditiveBaseline(cells="controls")',
    "additive_joint": 'AdditiveBaseline(effects="joint", cells="controls")',
    "linear": 'LinearBaseline(GO BP prior, cells="controls")',
    "knn": 'KNNBaseline(GO BP + Hallmark, cells="controls")',
    START: "PerturbationRegressor, 0 epochs (its untrained start)",
    MODEL: "PerturbationRegressor (defaults)",
    KNN_START: 'PerturbationRegressor(start="knn"), 0 epochs',
    KNN_MODEL: 'PerturbationRegressor(start="knn")',
}
BASELINE_NAMES = ("control", "mean", "additive", "additive_joint", "linear", "knn")


def score_fold(model, test, keys: dict) -> dict:
    """Every metric of one fitted model on one test split, from one prediction."""
    from sktx.metrics import PerturbationScorer, build_mean_baseline
    from sktx.metrics._scores import vcc_from_tables, vcc_metrics
    from sktx.metrics._table import Reference, select_metrics

    scorer = PerturbationScorer("vcc", **keys)
    real, pred = scorer.real_and_predicted(model, test)
    ref = Reference(real, cell_type_key=None, **keys)
    table = ref.table(ref.read(pred), select_metrics(None))
    base = build_mean_baseline(real, cell_type_key=None, **keys)
    base.obs[keys["perturbation_key"]] = real.labels  # canonical, as `real` is read
    in_vcc = select_metrics([m.name for m in vcc_metrics()])
    base_table = ref.table(ref.read(base, validate=False), in_vcc)
    out = {k: float(np.nan_to_num(table[k].astype(float)).mean()) for _, k, _ in METRICS[:-1]}
    out["vcc"] = float(vcc_from_tables(table, base_table))
    out["n_fallback"] = int(scorer.fallbacks_[-1]["n_fallback"]) if scorer.fallbacks_ else 0
    out["n_perturbations"] = len(table)
    return out


def run(datasets, names=None, *, folds: int = 5, epochs: int | None = None, store=None) -> dict:
    """Cross-validate ``names`` (default all models) on ``datasets``; returns the store.

    ``store[dataset]["models"][model]`` holds ``per_fold`` records (one dict of metrics
    per fold) and ``wall_s``; a given ``store`` is updated in place.
    """
    from sklearn.base import clone

    from sktx.model_selection import PerturbationSplit

    store = {} if store is None else store
    for dataset in datasets:
        adata, keys = load(dataset)
        cv = PerturbationSplit(folds, shuffle=True, random_state=0, **keys)
        splits = list(cv.split(adata))
        factories = models(keys, epochs)
        entry = store.setdefault(dataset, {"models": {}})
        labels = adata.obs[keys["perturbation_key"]].astype(str)
        entry.update(
            role=DATASETS[dataset][0],
            description=DATASETS[dataset][1],
            cells=int(adata.n_obs),
            genes=int(adata.n_vars),
            perturbations=int(labels[labels != keys["control_label"]].nunique()),
            folds=folds,
        )
        for name in names or list(factories):
            if name not in factories:
                raise ValueError(f"unknown model {name!r}; choose from {list(factories)}")
            per_fold, t0 = [], time.perf_counter()
            for train, test in splits:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    model = clone(factories[name]()).fit(adata[train].copy())
                    per_fold.append(score_fold(model, adata[test].copy(), keys))
            wall = time.perf_counter() - t0
            entry["models"][name] = {
                "per_fold": per_fold,
                "wall_s": round(wall, 1),
                "epochs": epochs if name == MODEL else None,
            }
            means = {k: round(float(np.mean([r[k] for r in per_fold])), 4) for _, k, _ in METRICS}
            print(dataset, name, means, f"{wall:.0f} s", flush=True)
    return store


def _values(entry: dict, model: str, key: str) -> np.ndarray:
    return np.array([r[key] for r in entry["models"][model]["per_fold"]], dtype=float)


def best_baseline(entry: dict) -> list[str]:
    """The baselines with the highest mean VCC score (several when tied)."""
    names = [n for n in BASELINE_NAMES if n in entry["models"]]
    if not names:
        return []
    vcc = {n: _values(entry, n, "vcc").mean() for n in names}
    top = max(vcc.values())
    return [n for n in names if np.isclose(vcc[n], top, rtol=0, atol=1e-9)]


def compare(entry: dict, model: str = MODEL, metrics=None) -> dict:
    """The model vs the best baseline *on each metric*: win, tie or loss per metric.

    Paired over folds: the difference model - baseline per fold (sign-corrected so that
    positive is better) is a win or a loss when its mean is more than two standard
    errors (std over folds / sqrt(folds)) away from 0, else a tie (exact equality is a
    tie too). ``metrics``: ``(key, lower_is_better)`` pairs, by default DES, PDS, MAE
    and the VCC score.
    """
    out = {}
    names = [n for n in BASELINE_NAMES if n in entry["models"]]
    if model not in entry["models"] or not names:
        return out
    if metrics is None:
        metrics = [(key, lower) for _, key, lower in METRICS if key in VERDICT_METRICS]
    for key, lower in metrics:
        means = {n: _values(entry, n, key).mean() for n in names}
        best = min(means, key=means.get) if lower else max(means, key=means.get)
        diff = _values(entry, model, key) - _values(entry, best, key)
        diff = -diff if lower else diff
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        if np.allclose(diff, 0, atol=1e-12) or abs(diff.mean()) <= 2 * se:
            verdict = "tie"
        else:
            verdict = "win" if diff.mean() > 0 else "loss"
        out[key] = {
            "verdict": verdict,
            "model": float(_values(entry, model, key).mean()),
            "baseline": best,
            "baseline_value": float(means[best]),
            "difference": float(diff.mean()),
            "se": float(se),
        }
    return out


def _fmt(values: np.ndarray) -> str:
    return f"{values.mean():.4f} ± {values.std():.4f}"


def tables(store: dict) -> tuple[list[str], list[list], list[dict], dict]:
    """Summary columns and rows, one table per dataset, and the verdicts."""
    columns = ["dataset", "role", "best baseline (VCC)", "DES", "PDS", "MAE", "VCC score"]
    columns += ["VCC gain of training"]
    rows, per_dataset, verdicts = [], [], {}
    gains, real_gains = [], []
    for ds in [d for d in DATASETS if d in store]:
        entry = store[ds]
        verdict = compare(entry)
        verdicts[ds] = verdict
        best = best_baseline(entry)
        gain = ""
        if MODEL in entry["models"] and START in entry["models"]:
            g = _values(entry, MODEL, "vcc").mean() - _values(entry, START, "vcc").mean()
            gains.append(g)
            if ds != "sim150":
                real_gains.append(g)
            gain = f"{g:+.4f}"
        cells = []
        for key in VERDICT_METRICS:
            v = verdict.get(key)
            cells.append(
                f"{v['verdict']} ({v['model']:.4f} vs {v['baseline_value']:.4f} {v['baseline']})"
                if v
                else ""
            )
        best_txt = " = ".join(best) + (" (tied)" if len(best) > 1 else "")
        rows.append([ds, entry["role"], best_txt, *cells, gain])
        t_cols = ["model"] + [c for c, _, _ in METRICS] + ["fallback perts", "CV wall s"]
        t_rows = []
        for name in [n for n in LABELS if n in entry["models"]]:
            res = entry["models"][name]
            fb = int(sum(r.get("n_fallback", 0) for r in res["per_fold"]))
            t_rows.append(
                [LABELS[name]]
                + [_fmt(_values(entry, name, k)) for _, k, _ in METRICS]
                + [fb, res["wall_s"]]
            )
        per_dataset.append(
            {
                "title": f"{ds}: {entry['description']} ({entry['role']})",
                "columns": t_cols,
                "rows": t_rows,
                "notes": (
                    f"{entry['cells']} cells x {entry['genes']} genes, "
                    f"{entry['perturbations']} perturbations, {entry['folds']}-fold; "
                    f"best baseline by VCC score: {best_txt}."
                ),
            }
        )
    verdicts["mean_vcc_gain"] = float(np.mean(gains)) if gains else None
    verdicts["mean_vcc_gain_real"] = float(np.mean(real_gains)) if real_gains else None
    return columns, rows, per_dataset, verdicts


def _side(result: dict) -> str:
    """For a tie: whether the model's mean is above or below the baseline's (or equal)."""
    if abs(result["difference"]) <= 1e-9:
        return " (equal)"
    return " (better, within noise)" if result["difference"] > 0 else " (worse, within noise)"


def statement(verdicts: dict) -> str:
    """Where the model wins, ties and loses, in plain words."""
    lines = []
    for key, word in (("win", "wins"), ("tie", "ties"), ("loss", "loses")):
        hits = [
            f"{ds} {m.upper() if m != 'vcc' else 'VCC'}" + (_side(r) if key == "tie" else "")
            for ds, v in verdicts.items()
            if isinstance(v, dict)
            for m, r in v.items()
            if r["verdict"] == key
        ]
        lines.append(f"The model {word} against the best baseline on: " + (", ".join(hits) or "—"))
    gain, real = verdicts.get("mean_vcc_gain"), verdicts.get("mean_vcc_gain_real")
    if gain is not None:
        text = f"Training adds {gain:+.4f} VCC over the untrained start on average across datasets"
        if real is not None:
            text += f" ({real:+.4f} on average across the real ones, the simulator left out)"
        lines.append(text)
    return ".\n".join(lines) + "."


def notes(settings: dict, verdicts: dict) -> str:
    """The notes under the summary table: settings, rules, and the statement."""
    return (
        "Per dataset: 5-fold `PerturbationSplit(shuffle=True, random_state=0)` over "
        "perturbations, the same folds for every model, mean ± std over folds; one prediction "
        "per fold and model, scored by sktx.metrics (cell-eval definitions: DES = overlap_at_N, "
        "PDS = discrimination_score_l1, MAE of pseudobulk log1p, VCC score = DES/PDS/MAE scaled "
        "against the cell-mean baseline of the test split, 0 = no better). Every baseline "
        'builds cells as the model does (`cells="controls"`; ControlBaseline returns the '
        "controls). KNNBaseline: GO BP 2021 + Hallmark gene sets, defaults (n_neighbors=5, "
        "coexpression_weight=0.5, joint effects), not tuned. PerturbationRegressor: defaults "
        f"of this commit, GO BP 2021 as prior, max_epochs={settings['epochs'] or 'default'}, "
        f"CPU, 1 thread, commit {settings.get('commit', 'unknown')}; '0 epochs' = its untrained "
        "start (joint additive effects; an unseen target's typical effect moved towards its "
        "most similar fitted targets by a per-gene weight and shrunk by an absolute-error "
        "factor, both fitted leave-one-label-out: sktx/regressor/_start.py; that choice saw "
        "Datlinger and the simulator only, benchmarks/bench_start.py; since 50e6048 its "
        "co-expression is the control-cell correlation, as KNNBaseline's); 'start=\"knn\"' = "
        "the start of the 2026 edition (the neighbours' effects unshrunk), untrained, shown "
        "for reference (not the default, not in the verdicts); trained: three "
        "cross-fitted networks whose mean residual is scaled by a factor fitted on whole "
        "out-of-fold pseudobulks and corrected for the average (sktx/regressor/_crossfit.py; "
        "chosen on Datlinger and the simulator). A perturbation whose target the "
        "model cannot embed is scored as its fallback predicts it (column 'fallback perts': "
        "how many, summed over folds). Summary: the model vs the best baseline on each metric "
        "(per metric the baseline with the best mean), paired over folds; win/loss when the "
        "mean fold difference is more than 2 standard errors from 0, else tie. Roles: 'tune' "
        "data (Datlinger, simulator) may be looked at when choosing defaults; 'test' data are "
        "only measured.\n\n" + statement(verdicts)
    )


def write(store: dict, settings: dict) -> Path:
    columns, rows, per_dataset, verdicts = tables(store)
    return write_result(
        RESULT,
        title="Held-out quality: PerturbationRegressor vs fair baselines, every shared dataset",
        columns=columns,
        rows=rows,
        notes=notes(settings, verdicts),
        extra={"settings": settings, "datasets": store, "verdicts": verdicts}
        | {"tables": per_dataset, "peak_rss_gb": peak_rss_gb()},
    )


def load_store(path: Path = RESULTS / f"{RESULT}.json") -> dict:
    """Results stored by earlier runs (empty for a file of another format)."""
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("extra", {}).get("datasets", {}) or {}


DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def update_doc(doc: Path = DOC) -> Path:
    """Replace the quality section of docs/performance.md (only it) with quality.json's."""
    from render_performance import section

    text = doc.read_text()
    source = f"Source: `benchmarks/results/{RESULT}.json`."
    at = text.index(source)
    start = text.rfind("\n## ", 0, at)
    end = text.find("\n## ", at)
    new = "\n".join(section(RESULTS / f"{RESULT}.json")).rstrip("\n") + "\n"
    doc.write_text(text[:start] + new + (text[end:] if end >= 0 else ""))
    return doc


def _commit() -> str:
    """The checked-out commit (``+dirty`` when sktx/ has uncommitted changes)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "sktx"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--models", nargs="*", default=None, choices=list(LABELS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None, help="max_epochs of the model")
    ap.add_argument("--list", action="store_true", help="print dataset and model names")
    ap.add_argument(
        "--doc", action="store_true", help="only rewrite the quality section of performance.md"
    )
    args = ap.parse_args()
    if args.list:
        print("datasets:", " ".join(DATASETS))
        print("models:", " ".join(LABELS))
        return
    if args.doc:
        print(f"wrote {update_doc()}")
        return
    import torch

    torch.set_num_threads(1)
    store = load_store()
    settings = {"folds": args.folds, "epochs": args.epochs, "commit": _commit()}
    for ds in args.datasets:
        run([ds], args.models, folds=args.folds, epochs=args.epochs, store=store)
        path = write(store, settings)  # after every dataset: a crash keeps what is done
    print(f"wrote {path}")
    print(statement(tables(store)[3]))


if __name__ == "__main__":
    main()
