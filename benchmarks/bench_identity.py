"""Bit-identity check of sktx outputs: save them once, compare any later code against them.

A restructuring must not change what users get. ``save DIR`` runs a fixed set of cases
with the currently importable ``sktx`` (public API only) and writes every output array
to ``DIR/<case>.npz`` plus ``DIR/manifest.json`` (sha256, shape and dtype of each
array); ``compare DIR`` runs the same cases again and reports, per array, whether it is
bit-identical, its largest absolute difference and whether the shapes agree. The exit
status of ``compare`` is 1 when anything differs (or a case fails), else 0.

Cases (seeded, single-threaded so that reruns are bit-identical):

- ``a_norman_default`` / ``a_norman_gobp``: fold 0 of ``PerturbationSplit`` on the
  Norman/McFaline file, ``GeneSelector(n_genes=300)`` + ``PerturbationRegressor``
  (5 epochs), ``predict`` and ``predict_deltas`` of ``make_query`` of the held-out
  perturbations, loss history; the default case also holds the metric table of its
  prediction (``perturbation_metrics``), the VCC score (``vcc_score`` and the ``"vcc"``
  scorer) and ``GeneSelector.categories_``;
- ``b_norman_baselines``: every baseline, ``cells="profile"`` and ``"controls"``;
- ``c_datlinger_raw`` / ``c_datlinger_loaded``: Datlinger 2017 (raw counts) read with
  ``anndata.read_h5ad`` or ``sktx.datasets.load_h5ad``: selector output, a pipeline's
  and a bare regressor's predictions, ``AdditiveBaseline(effects="joint")``;
- ``d_progressive_sim``: ``ProgressiveFit`` over 50 -> 150 -> 300 genes on the simulator;
- ``f_backed``: Datlinger (counts) and Norman (log1p) opened with ``backed="r"``: a
  pipeline fitted on the whole file, a regressor on the training rows.

The script imports nothing of the repository but ``sktx``, so it can be run against
another checkout: ``PYTHONPATH=/path/to/checkout python bench_identity.py save DIR``.

Usage::

    python benchmarks/bench_identity.py save /tmp/sktx_ref
    python benchmarks/bench_identity.py compare /tmp/sktx_ref \\
        --json benchmarks/results/identity_compare.json
    python benchmarks/bench_identity.py compare /tmp/sktx_ref --only a_norman_default
    python benchmarks/bench_identity.py compare-demo /tmp/sktx_ref/demo_run runs/demo_run \
        --ref-stdout /tmp/sktx_ref/demo_stdout.txt --new-stdout demo_stdout.txt

``compare-demo`` compares two ``sktx demo`` run directories: the metric tables, genes
and figures byte for byte, the other files without wall times, throughput, memory,
dates and the run directory's path and name (two runs of the same code agree so).
Data: ``/work/shared`` unless ``SKTX_SHARED`` names the shared folder.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("SKTX_SHARED", "/work/shared"))
NORMAN_KEYS = {"perturbation_key": "perturbation", "control_label": "control"}
DATLINGER_KEYS = {"perturbation_key": "target_gene", "control_label": "control"}
SIM_KEYS = {"perturbation_key": "target_gene", "control_label": "non-targeting"}

Arrays = dict[str, np.ndarray]


# ---------------------------------------------------------------------- array helpers
def _strings(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=str)


def _dense(X) -> np.ndarray:
    import scipy.sparse as sp

    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _anndata_arrays(name: str, adata, obs_keys: list[str]) -> Arrays:
    """``X`` (dense, dtype kept), its storage format, names and the given obs columns."""
    import scipy.sparse as sp

    out = {
        f"{name}.X": _dense(adata.X),
        f"{name}.X_format": _strings([adata.X.format if sp.issparse(adata.X) else "dense"]),
        f"{name}.obs_names": _strings(adata.obs_names),
        f"{name}.var_names": _strings(adata.var_names),
    }
    for key in obs_keys:
        if key in adata.obs.columns:
            out[f"{name}.obs.{key}"] = _strings(adata.obs[key])
    return out


def _frame_arrays(name: str, frame) -> Arrays:
    """Numeric columns as one float64 matrix; index, column names and text columns as str."""
    numeric = frame.select_dtypes(include="number")
    out = {
        f"{name}.values": numeric.to_numpy(dtype=np.float64),
        f"{name}.columns": _strings(numeric.columns),
        f"{name}.index": _strings(frame.index.to_flat_index()),
    }
    for col in frame.columns.difference(numeric.columns):
        out[f"{name}.text.{col}"] = _strings(frame[col])
    return out


def _history_arrays(name: str, net) -> Arrays:
    hist = net.history_
    out = {f"{name}.train_loss": np.asarray(hist[:, "train_loss"], dtype=np.float64)}
    if "valid_loss" in hist[-1]:
        out[f"{name}.valid_loss"] = np.asarray(hist[:, "valid_loss"], dtype=np.float64)
    return out


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# ---------------------------------------------------------------------- data (cached)
_CACHE: dict = {}


_PRINTS: dict[str, list[str]] = {}


def _fingerprint(adata) -> str:
    """sha256 of an AnnData's matrix, obs and var names (to catch inputs modified in place)."""
    import pandas as pd
    import scipy.sparse as sp

    h = hashlib.sha256()
    X = adata.X
    parts = [X.data, X.indices, X.indptr] if sp.issparse(X) else [np.asarray(X)]
    for part in parts:
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(pd.util.hash_pandas_object(adata.obs.astype(str), index=True).to_numpy().tobytes())
    h.update("\0".join(map(str, adata.var_names)).encode())
    return h.hexdigest()


def _cached(key: str, make: Callable):
    """Data shared by several cases, made once; its fingerprint is kept for the checks."""
    if key not in _CACHE:
        value = make()
        _CACHE[key] = value
        items = value if isinstance(value, tuple) else (value,)
        _PRINTS[key] = [_fingerprint(a) for a in items]
    return _CACHE[key]


def _inputs_unmodified() -> bool:
    """Whether every shared input still holds what it held when it was made."""
    for key, prints in _PRINTS.items():
        value = _CACHE[key]
        items = value if isinstance(value, tuple) else (value,)
        if [_fingerprint(a) for a in items] != prints:
            return False
    return True


# SKTX_IDENTITY_CANONICAL=1: feed every version the same, already canonical labels
# ("SET+KLF1" -> "KLF1+SET"), so that what canonicalisation changes on purpose is kept
# apart from everything else, which must stay bit-identical.
CANONICAL = os.environ.get("SKTX_IDENTITY_CANONICAL") == "1"


def _canon(adata, key: str):
    """``adata`` with the labels of ``obs[key]`` in canonical form (targets sorted)."""
    if CANONICAL:
        old = adata.obs[key].astype(str)
        new = old.map(lambda lab: "+".join(sorted(lab.split("+"))))
        adata.obs[key] = new.astype("category")
    return adata


def _norman():
    """Norman/McFaline via load_h5ad and fold 0: (adata, train, test)."""

    def make():
        from sktx import PerturbationSplit
        from sktx.datasets import load_h5ad

        path = SHARED / "data" / "norman2019_mcfaline2023_devel.h5ad"
        adata = _canon(load_h5ad(path, cell_type_key="cell_type", **NORMAN_KEYS), "perturbation")
        cv = PerturbationSplit(n_splits=5, shuffle=True, random_state=0, **NORMAN_KEYS)
        train, test = next(cv.split(adata))
        return adata, adata[train].copy(), adata[test].copy()

    return _cached("norman", make)


def _norman_query():
    def make():
        from sktx.model_selection import make_query

        _, _, test = _norman()
        return make_query(test, cell_type_key="cell_type", random_state=0, **NORMAN_KEYS)

    return _cached("norman_query", make)


def _datlinger(how: str):
    """Datlinger 2017 read as stored (``"raw"``) or by load_h5ad, and fold 0."""

    def make():
        from sktx import PerturbationSplit

        path = SHARED / "data" / "datlinger2017_jurkat.h5ad"
        if how == "raw":
            import anndata as ad

            adata = ad.read_h5ad(path)
        else:
            from sktx.datasets import load_h5ad

            adata = load_h5ad(path, **DATLINGER_KEYS)
        cv = PerturbationSplit(n_splits=5, shuffle=True, random_state=0, **DATLINGER_KEYS)
        train, test = next(cv.split(adata))
        return adata[train].copy(), adata[test].copy()

    return _cached(f"datlinger_{how}", make)


# ---------------------------------------------------------------------- cases
NORMAN_OBS = ["perturbation", "cell_type", "control_cell"]


def _norman_pipeline(**model_params):
    from sklearn.pipeline import Pipeline

    from sktx import GeneSelector, PerturbationRegressor

    keys = dict(cell_type_key="cell_type", **NORMAN_KEYS)
    return Pipeline(
        [
            ("select", GeneSelector(n_genes=300, **keys)),
            (
                "model",
                PerturbationRegressor(
                    max_epochs=5, random_state=0, n_jobs=1, **keys, **model_params
                ),
            ),
        ]
    )


def _pipeline_arrays(model, query) -> Arrays:
    out = _anndata_arrays("predict", model.predict(query), NORMAN_OBS)
    # predict_deltas is a method of the regressor: feed it the selected genes
    deltas = model[-1].predict_deltas(model[:-1].transform(query))
    out.update(_frame_arrays("predict_deltas", deltas))
    out.update(_history_arrays("history", model[-1]))
    return out


def case_a_norman_default() -> tuple[Arrays, dict]:
    """Default regressor (built-in gene sets); unknown held-out targets only warn."""
    from sktx.metrics import get_scorer, perturbation_metrics, vcc_score

    _, train, test = _norman()
    query = _norman_query()
    # the built-in lists embed no held-out target such as KMT2A: "error" would refuse them
    model = _norman_pipeline(on_unknown_target="warn").fit(train)
    out = _pipeline_arrays(model, query)
    # case e: the metric table of this prediction against the real held-out cells
    # (the scorers' construction: predicted perturbed cells + the real control cells)
    import anndata as ad

    pred = model.predict(query)
    genes = list(pred.var_names)
    real = test[:, genes]
    is_ctrl = (real.obs["perturbation"] == "control").to_numpy()
    obs_cols = ["perturbation", "cell_type"]
    pred_all = ad.concat(
        [
            ad.AnnData(np.asarray(pred.X, dtype=np.float64), obs=pred.obs[obs_cols]),
            ad.AnnData(_dense(real.X[is_ctrl]), obs=real.obs[obs_cols][is_ctrl]),
        ],
        index_unique="-",
    )
    pred_all.var_names = genes
    real_ad = ad.AnnData(_dense(real.X), obs=real.obs[obs_cols].copy())
    real_ad.var_names = genes
    table = perturbation_metrics(real_ad, pred_all, cell_type_key="cell_type", **NORMAN_KEYS)
    out.update(_frame_arrays("metrics", table))
    out["vcc_score"] = np.asarray(
        [vcc_score(real_ad, pred_all, cell_type_key="cell_type", **NORMAN_KEYS)]
    )
    # the scorer builds its own query and pair from the test split
    out["vcc_scorer"] = np.asarray([get_scorer("vcc")(model, test)])
    categories = model[0].categories_
    out.update(_frame_arrays("categories", categories))
    extra = {"categories": json.loads(categories.to_json(orient="records"))}
    return out, extra


def case_a_norman_gobp() -> tuple[Arrays, dict]:
    """GO BP prior gene sets, ``on_unknown_target="warn"``, as in README.md."""
    _, train, _ = _norman()
    gmt = str(SHARED / "genesets" / "go_bp_2021.gmt")
    model = _norman_pipeline(gene_sets=gmt, on_unknown_target="warn").fit(train)
    return _pipeline_arrays(model, _norman_query()), {}


def case_b_norman_baselines() -> tuple[Arrays, dict]:
    from sktx.baselines import AdditiveBaseline, ControlBaseline, LinearBaseline, MeanBaseline

    _, train, _ = _norman()
    query = _norman_query()
    keys = dict(cell_type_key="cell_type", **NORMAN_KEYS)
    gmt = str(SHARED / "genesets" / "go_bp_2021.gmt")
    models = {"control": ControlBaseline(**keys)}
    for cells in ("profile", "controls"):
        models[f"mean_{cells}"] = MeanBaseline(cells=cells, **keys)
        models[f"additive_singles_{cells}"] = AdditiveBaseline(
            cells=cells, effects="singles", **keys
        )
        models[f"additive_joint_{cells}"] = AdditiveBaseline(cells=cells, effects="joint", **keys)
        models[f"linear_{cells}"] = LinearBaseline(cells=cells, **keys)
        models[f"linear_gobp_{cells}"] = LinearBaseline(cells=cells, prior_gene_sets=gmt, **keys)
    out: Arrays = {}
    for name, model in models.items():
        out.update(_anndata_arrays(name, model.fit(train).predict(query), NORMAN_OBS))
    return out, {}


def _case_datlinger(how: str) -> tuple[Arrays, dict]:
    from sklearn.pipeline import Pipeline

    from sktx import GeneSelector, PerturbationRegressor
    from sktx.baselines import AdditiveBaseline
    from sktx.model_selection import make_query

    train, test = _datlinger(how)
    query = make_query(test, random_state=0, **DATLINGER_KEYS)
    obs = ["target_gene", "control_cell"]
    reg = dict(max_epochs=3, random_state=0, n_jobs=1, on_unknown_target="warn")
    selector = GeneSelector(n_genes=200, **DATLINGER_KEYS).fit(train)
    out = _anndata_arrays("select_transform", selector.transform(test), obs)
    out.update(_frame_arrays("categories", selector.categories_))
    pipe = Pipeline(
        [
            ("select", GeneSelector(n_genes=200, **DATLINGER_KEYS)),
            ("model", PerturbationRegressor(**DATLINGER_KEYS, **reg)),
        ]
    ).fit(train)
    out.update(_anndata_arrays("pipeline_predict", pipe.predict(query), obs))
    out.update(_history_arrays("pipeline_history", pipe[-1]))
    # the bare regressor on the stored matrix of the selected genes: with `raw` that is
    # counts, which the regressor itself must detect and log1p-normalise
    genes = list(selector.selected_genes_)
    bare = PerturbationRegressor(**DATLINGER_KEYS, **reg).fit(train[:, genes].copy())
    out.update(_anndata_arrays("regressor_predict", bare.predict(query[:, genes].copy()), obs))
    out.update(_history_arrays("regressor_history", bare))
    joint = AdditiveBaseline(effects="joint", **DATLINGER_KEYS).fit(train)
    out.update(_anndata_arrays("additive_joint", joint.predict(query), obs))
    return out, {}


def case_c_datlinger_raw() -> tuple[Arrays, dict]:
    """Datlinger read with ``anndata.read_h5ad``: raw counts into every estimator."""
    return _case_datlinger("raw")


def case_c_datlinger_loaded() -> tuple[Arrays, dict]:
    """Datlinger read with ``sktx.datasets.load_h5ad`` (log1p, counts layer)."""
    return _case_datlinger("loaded")


def case_d_progressive_sim() -> tuple[Arrays, dict]:
    from sklearn.pipeline import Pipeline

    from sktx import GeneSelector, PerturbationRegressor, ProgressiveFit
    from sktx.datasets import make_perturbseq
    from sktx.model_selection import make_query

    sim = make_perturbseq(n_cells=1500, n_genes=300, n_perturbations=12, random_state=0)
    sim = _canon(sim, "target_gene")
    pipe = Pipeline(
        [
            ("select", GeneSelector(**SIM_KEYS)),
            ("model", PerturbationRegressor(**SIM_KEYS, random_state=0, n_jobs=1)),
        ]
    )
    prog = ProgressiveFit(pipe, phases=(50, 150, 300), epochs_per_phase=(2, 2, 3), random_state=0)
    before = _fingerprint(sim)
    prog.fit(sim)
    query = make_query(sim, random_state=0, **SIM_KEYS)
    out = _anndata_arrays("predict", prog.predict(query), ["target_gene", "control_cell"])
    out["sim_unmodified"] = np.asarray([_fingerprint(sim) == before])
    for k, phase in enumerate(prog.phase_history_):
        for key in ("n_genes", "epochs", "seed"):
            out[f"phase{k}.{key}"] = np.asarray([phase[key]], dtype=np.int64)
        for key in ("train_loss", "valid_loss"):
            out[f"phase{k}.{key}"] = np.asarray(phase[key], dtype=np.float64)
    return out, {}


def case_f_backed() -> tuple[Arrays, dict]:
    """Fits on files opened with ``backed="r"`` (rows streamed from disk).

    anndata cannot make a view of a backed view, so the pipeline is fitted on the whole
    file (as in docs/scaling.md) and the bare regressor on the backed training rows.
    """
    import anndata as ad
    from sklearn.pipeline import Pipeline

    from sktx import GeneSelector, PerturbationRegressor, PerturbationSplit
    from sktx.model_selection import make_query

    out: Arrays = {}
    runs = [
        # raw counts, normalised row by row over all stored genes
        ("datlinger", "datlinger2017_jurkat.h5ad", DATLINGER_KEYS, None, 200, 3),
        # log1p with four cell types
        ("norman", "norman2019_mcfaline2023_devel.h5ad", NORMAN_KEYS, "cell_type", 300, 5),
    ]
    for name, file, keys, ct, n_genes, epochs in runs:
        reg = dict(
            max_epochs=epochs,
            random_state=0,
            n_jobs=1,
            on_unknown_target="warn",
            cell_type_key=ct,
            **keys,
        )
        backed = _canon(ad.read_h5ad(SHARED / "data" / file, backed="r"), keys["perturbation_key"])
        cv = PerturbationSplit(n_splits=5, shuffle=True, random_state=0, **keys)
        train, test = next(cv.split(backed))
        test_mem = _canon(ad.read_h5ad(SHARED / "data" / file), keys["perturbation_key"])[
            test
        ].copy()
        query = make_query(test_mem, cell_type_key=ct, random_state=0, **keys)
        obs = [keys["perturbation_key"], "control_cell"] + ([ct] if ct else [])
        pipe = Pipeline(
            [
                ("select", GeneSelector(n_genes=n_genes, cell_type_key=ct, **keys)),
                ("model", PerturbationRegressor(**reg)),
            ]
        ).fit(backed)
        out.update(_anndata_arrays(f"{name}.pipeline_predict", pipe.predict(query), obs))
        out.update(_history_arrays(f"{name}.pipeline_history", pipe[-1]))
        out[f"{name}.selected_genes"] = _strings(pipe[0].selected_genes_)
        bare = PerturbationRegressor(**reg).fit(backed[train])
        out.update(_anndata_arrays(f"{name}.regressor_predict", bare.predict(query), obs))
        out.update(_history_arrays(f"{name}.regressor_history", bare))
        backed.file.close()
    return out, {}


CASES: dict[str, Callable[[], tuple[Arrays, dict]]] = {
    "a_norman_default": case_a_norman_default,
    "a_norman_gobp": case_a_norman_gobp,
    "b_norman_baselines": case_b_norman_baselines,
    "c_datlinger_raw": case_c_datlinger_raw,
    "c_datlinger_loaded": case_c_datlinger_loaded,
    "d_progressive_sim": case_d_progressive_sim,
    "f_backed": case_f_backed,
}


# ---------------------------------------------------------------------- running
def _run_case(name: str) -> dict:
    """Run one case: arrays, JSON extras, sktx warnings (as messages) and wall time."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays, extra = CASES[name]()
    # warnings sktx gives users are behaviour too; library deprecation notices are not
    messages = sorted(
        {
            f"{w.category.__name__}: {w.message}"
            for w in caught
            if not issubclass(w.category, (DeprecationWarning, FutureWarning))
        }
    )
    arrays["warnings"] = _strings(messages)
    # estimators must not modify what they are given (the data contract)
    arrays["inputs_unmodified"] = np.asarray([_inputs_unmodified()])
    return {
        "arrays": arrays,
        "extra": extra,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _environment() -> dict:
    import torch

    import sktx

    src = Path(sktx.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, ""
    return {
        "sktx_file": str(Path(sktx.__file__).resolve()),
        "sktx_commit": commit,
        "sktx_dirty": bool(dirty),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(CASES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"error: unknown cases {unknown}; choose from {list(CASES)}")
    return names


_LIMITS = []


def _setup() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    # one torch and one BLAS thread: reductions run in one fixed order, whatever the
    # machine's core count or load, so reruns are bit-identical
    torch.set_num_threads(1)
    _LIMITS.append(threadpool_limits(limits=1))
    for path in (SHARED / "data", SHARED / "genesets"):
        if not path.is_dir():
            raise SystemExit(f"error: {path} not found; set SKTX_SHARED to the shared folder")


def save(directory: Path, only: str | None) -> int:
    _setup()
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"environment": _environment(), "cases": {}}
    t0 = time.perf_counter()
    for name in _selected(only):
        result = _run_case(name)
        np.savez(directory / f"{name}.npz", **result["arrays"])
        manifest["cases"][name] = {
            "file": f"{name}.npz",
            "wall_s": result["wall_s"],
            "arrays": {
                key: {"sha256": _sha256(a), "shape": list(a.shape), "dtype": str(a.dtype)}
                for key, a in result["arrays"].items()
            },
            "extra": result["extra"],
        }
        print(f"{name}: {len(result['arrays'])} arrays, {result['wall_s']} s", flush=True)
    manifest["total_wall_s"] = round(time.perf_counter() - t0, 1)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"saved to {directory} in {manifest['total_wall_s']} s")
    return 0


def _max_abs_diff(ref: np.ndarray, new: np.ndarray) -> float | None:
    """Largest |ref - new|; NaN in both places counts as equal, in one as inf."""
    if ref.shape != new.shape:
        return None
    if ref.size == 0:
        return 0.0
    if ref.dtype.kind in "biuf" and new.dtype.kind in "biuf":
        a, b = ref.astype(np.float64), new.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        one_nan = np.isnan(a) ^ np.isnan(b)
        with np.errstate(invalid="ignore"):
            d = np.abs(a - b)
        d[both_nan | (a == b)] = 0.0  # equal infinities too
        d[one_nan] = np.inf
        return float(d.max())
    # text: the number of entries that differ
    return float((ref.astype(str) != new.astype(str)).sum())


def _compare_array(ref: np.ndarray, new: np.ndarray | None, sha_saved: str) -> dict:
    if new is None:
        return {"identical": False, "missing": True, "ref_sha256": sha_saved}
    sha = _sha256(new)
    row = {
        "identical": sha == sha_saved and ref.shape == new.shape and ref.dtype == new.dtype,
        "shape": list(new.shape),
        "dtype": str(new.dtype),
        "sha256": sha,
        "max_abs_diff": _max_abs_diff(ref, new),
    }
    if not row["identical"]:
        row.update(
            same_shape=ref.shape == new.shape,
            same_dtype=ref.dtype == new.dtype,
            ref_shape=list(ref.shape),
            ref_dtype=str(ref.dtype),
            ref_sha256=sha_saved,
        )
    return row


def _table(report: dict) -> dict:
    """The fields ``benchmarks/render_performance.py`` reads from every results file."""
    import torch

    env = report["environment"]
    rows = []
    for name, case in report["cases"].items():
        arrays = case.get("arrays", {})
        diffs = [r["max_abs_diff"] for r in arrays.values() if r.get("max_abs_diff") is not None]
        rows.append(
            [
                name,
                len(arrays),
                "yes" if case["identical"] else "no",
                sum(not r["identical"] for r in arrays.values()),
                max(diffs, default=0.0) if "error" not in case else case["error"],
                case.get("ref_wall_s"),
                case.get("wall_s"),
            ]
        )
    ref = report["reference_environment"].get("sktx_commit") or "?"
    return {
        "benchmark": "identity",
        "title": "Bit-identity of outputs against a saved reference",
        "date": env["date"],
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": env["python"],
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "columns": [
            "case",
            "arrays",
            "bit-identical",
            "arrays differing",
            "max abs diff",
            "reference s",
            "now s",
        ],
        "rows": rows,
        "notes": (
            f"Reference saved from sktx at commit {ref[:7]}; compared with sktx from "
            f"`{env['sktx_file']}` (commit {(env.get('sktx_commit') or '?')[:7]}"
            f"{', uncommitted changes' if env.get('sktx_dirty') else ''}). "
            "max abs diff: largest |reference - now| over an array's entries (text arrays: "
            "entries that differ). One torch and one BLAS thread."
        ),
    }


def compare(directory: Path, only: str | None, json_path: Path | None) -> int:
    _setup()
    manifest = json.loads((directory / "manifest.json").read_text())
    report = {
        "command": "python " + " ".join(sys.argv),
        "reference": str(directory),
        "reference_environment": manifest["environment"],
        "environment": _environment(),
        "cases": {},
    }
    n_diff = 0
    t0 = time.perf_counter()
    for name in _selected(only):
        saved = manifest["cases"].get(name)
        if saved is None:
            print(f"{name}: not in the reference, skipped")
            continue
        if not (directory / saved["file"]).is_file():
            raise SystemExit(f"error: {directory / saved['file']} missing from the reference")
        with np.load(directory / saved["file"]) as npz:
            ref = {key: npz[key] for key in npz.files}
        try:
            result = _run_case(name)
        except Exception as exc:  # a failing case is a difference, keep comparing others
            report["cases"][name] = {"error": f"{type(exc).__name__}: {exc}", "identical": False}
            print(f"{name}: FAILED {type(exc).__name__}: {exc}")
            n_diff += 1
            continue
        new = result["arrays"]
        rows = {
            key: _compare_array(ref[key], new.get(key), info["sha256"])
            for key, info in saved["arrays"].items()
        }
        extra_keys = sorted(set(new) - set(saved["arrays"]))
        identical = all(r["identical"] for r in rows.values()) and not extra_keys
        identical = identical and result["extra"] == saved["extra"]
        report["cases"][name] = {
            "identical": identical,
            "wall_s": result["wall_s"],
            "ref_wall_s": saved["wall_s"],
            "new_arrays_not_in_reference": extra_keys,
            "extra_identical": result["extra"] == saved["extra"],
            "arrays": rows,
        }
        n_diff += not identical
        print(f"{name}: {'bit-identical' if identical else 'DIFFERS'} ({result['wall_s']} s)")
        for key, r in rows.items():
            if not r["identical"]:
                if r.get("missing"):
                    print(f"  {key}: missing from the new output")
                    continue
                print(
                    f"  {key}: shape {r['ref_shape']} -> {r['shape']}, "
                    f"dtype {r['ref_dtype']} -> {r['dtype']}, max |diff| {r['max_abs_diff']}"
                )
        for key in extra_keys:
            print(f"  {key}: new array, not in the reference")
    report["total_wall_s"] = round(time.perf_counter() - t0, 1)
    report["all_identical"] = n_diff == 0
    report.update(_table(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {json_path}")
    print("all bit-identical" if n_diff == 0 else f"{n_diff} case(s) differ")
    return 0 if n_diff == 0 else 1


# ---------------------------------------------------------------------- sktx demo runs
# Files of a run directory that are byte-identical between two runs of the same code.
DEMO_EXACT = [
    "metrics.csv",
    "metrics.json",
    "per_perturbation.csv",
    "genes.csv",
    "figures/heatmap.png",
    "figures/loss.png",
    "figures/scatter.png",
]
# Not compared: they embed wall times, throughput or memory (model.sktx its history).
DEMO_SKIPPED = ["report.html", "figures/throughput.png", "model.sktx"]
_TIMING_COLUMNS = {"cells_per_s", "peak_rss_gb", "dur", "cells/s (mean)", "peak RSS (GB)"}
_TIMING_COLUMNS |= {"wall time (s)"}


def _mask_run(text: str, run: Path) -> str:
    return text.replace(str(run.resolve()), "<out>").replace(run.resolve().name, "<name>")


def _normalise(text: str, kind: str) -> str:
    """Text of a run file without what varies between identical runs (times, dates)."""
    import csv
    import io
    import re

    if kind == "json":
        data = json.loads(text)
        data = {k: v for k, v in data.items() if "wall time" not in k}
        return json.dumps(data, indent=1, sort_keys=True)
    if kind == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        keep = [i for i, col in enumerate(rows[0]) if col not in _TIMING_COLUMNS]
        return "\n".join(",".join(row[i] for i in keep) for row in rows)
    # Markdown report or stdout
    lines, drop = [], set()
    for line in text.splitlines():
        if re.search(r"generated \d{4}-\d\d-\d\d|wall time \(s\) \| [\d.]+ \|", line):
            continue
        if line.startswith("|"):
            cells = line.strip("|").split("|")
            if any(c.strip() in _TIMING_COLUMNS for c in cells):  # a table header
                drop = {i for i, c in enumerate(cells) if c.strip() in _TIMING_COLUMNS}
            line = "|".join(c for i, c in enumerate(cells) if i not in drop)
        else:
            drop = set()
        # stdout: "trained in 69.5 s", "Done in 99 s"
        lines.append(re.sub(r"\b\d+(\.\d+)? s\b", "<t> s", line))
    return "\n".join(lines)


def _run_file(run: Path, name: str) -> str:
    import gzip

    if name.endswith(".gz"):  # the gzip header holds a time stamp
        return gzip.decompress((run / name).read_bytes()).decode()
    kind = name.rsplit(".", 1)[-1]
    return _normalise(_mask_run((run / name).read_text(), run), kind)


def compare_demo(ref: Path, new: Path, ref_stdout: Path | None, new_stdout: Path | None) -> int:
    """Compare two ``sktx demo`` run directories (and optionally their stdout).

    Files in ``DEMO_EXACT`` must be byte-identical; the others are compared without
    wall times, throughput, memory, dates and the run directory's path and name.
    """
    results = {}
    for name in DEMO_EXACT:
        a, b = ref / name, new / name
        results[name] = a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()
    for name in ["deltas.csv.gz", "history.csv", "data.json", "config.json", "report.md"]:
        results[f"{name} (normalised)"] = _run_file(ref, name) == _run_file(new, name)
    if ref_stdout is not None and new_stdout is not None:
        texts = [
            _normalise(_mask_run(path.read_text(), run), "md")
            for path, run in ((ref_stdout, ref), (new_stdout, new))
        ]
        results["stdout (normalised)"] = texts[0] == texts[1]
    for name, same in results.items():
        print(f"{'same   ' if same else 'DIFFERS'} {name}")
    print(f"not compared (timings inside): {', '.join(DEMO_SKIPPED)}")
    ok = all(results.values())
    print("demo outputs identical" if ok else "demo outputs differ")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_save = sub.add_parser("save", help="run the cases and store their outputs in DIR")
    p_save.add_argument("directory", type=Path)
    p_cmp = sub.add_parser("compare", help="run the cases and compare with DIR")
    p_cmp.add_argument("directory", type=Path)
    p_cmp.add_argument("--json", type=Path, default=None, help="write the comparison here")
    for p in (p_save, p_cmp):
        p.add_argument("--only", default=None, help=f"comma-separated subset of {list(CASES)}")
    p_demo = sub.add_parser("compare-demo", help="compare two `sktx demo` run directories")
    p_demo.add_argument("reference", type=Path)
    p_demo.add_argument("new", type=Path)
    p_demo.add_argument("--ref-stdout", type=Path, default=None)
    p_demo.add_argument("--new-stdout", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "save":
        return save(args.directory, args.only)
    if args.command == "compare-demo":
        return compare_demo(args.reference, args.new, args.ref_stdout, args.new_stdout)
    return compare(args.directory, args.only, args.json)


if __name__ == "__main__":
    sys.exit(main())
