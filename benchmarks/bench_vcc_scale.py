"""VCC-sized run: one epoch end to end on a backed 18,080-gene h5ad, and a submission's prediction.

Writes a simulated 18,080-gene CSR h5ad (raw counts) of ``max(--sizes)`` cells in
blocks (``bench_backed.write_blocks``: one ``make_perturbseq`` screen of 10,000
cells and 40 perturbations, further blocks resampled and binomially thinned), then
for each size fits ``PerturbationRegressor(max_epochs=1, crossfit=0)`` on
``anndata.read_h5ad(path, backed="r")[:n]`` in a fresh subprocess: wall time of
``fit`` (setup = validation scan, pseudobulks, PCA, gene graph, baselines; plus
the epoch), peak RSS (``VmHWM``). ``--setup-sizes`` are fitted with ``max_epochs=0``
(setup only), to show how setup grows with cells; ``--profile`` adds the top
functions of a cProfile of the fit. With the model fitted on the largest size it
predicts a VCC-style submission in ONE ``predict_perturbations`` call: ``--perts``
perturbations (targets drawn from the genes, unseen in training) x
``--cells-per-pert`` cells, from 1,000 control cells, as raw counts
(``--output counts``, the submission format), timed, with the peak RSS of the
prediction alone (``VmHWM`` reset through ``/proc/self/clear_refs`` after the fit).

The VCC training set is ~220,000 cells; on 2 shared cores one epoch over it takes
longer than a session allows, so the default sizes show how setup and epoch time
grow with cells instead; ``--sizes 220000`` runs the real size. ``--path`` keeps
the h5ad (written once if missing) for later runs; without it a temporary file is
written and deleted.

    python benchmarks/bench_vcc_scale.py                       # 2.5k, 5k, 10k cells
    python benchmarks/bench_vcc_scale.py --sizes 220000 \
        --setup-sizes 2500 10000 55000 --path /tmp/vcc_220k.h5ad  # the VCC size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import write_result  # noqa: E402
from bench_backed import _proc_status_gb, write_blocks  # noqa: E402

GENES = 18_080
KEYS = {
    "perturbation_key": "target_gene",
    "control_label": "non-targeting",
    "cell_type_key": None,  # one cell type: make_perturbseq writes no column
}


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _profile_top(prof, n: int = 25) -> list:
    """The ``n`` functions with the largest cumulative time: [name, calls, cum s, own s]."""
    import pstats

    stats = pstats.Stats(prof)
    rows = [
        [f"{Path(f).name}:{line}({name})", int(nc), float(ct), float(tt)]
        for (f, line, name), (_, nc, tt, ct, _) in stats.stats.items()
    ]
    return sorted(rows, key=lambda r: -r[2])[:n]


def worker(
    path: str,
    n_obs: int,
    threads: int,
    perts: int,
    per_pert: int,
    epochs: int = 1,
    output: str = "counts",
    profile: bool = False,
    model_out: str | None = None,
) -> dict:
    import anndata as ad

    from sktx.regressor import PerturbationRegressor

    adata = ad.read_h5ad(path, backed="r")
    if n_obs < adata.n_obs:
        adata = adata[:n_obs]  # a backed view: still read row by row
    model = PerturbationRegressor(
        **KEYS,
        max_epochs=epochs,
        crossfit=0,
        n_jobs=threads,
        random_state=0,
        callbacks__progress=None,
    )
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    start = time.perf_counter()
    model.fit(adata)
    wall = time.perf_counter() - start
    if prof is not None:
        prof.disable()
    epoch_s = float(model.history_[-1, "dur"]) if epochs else 0.0
    out = {
        "n_obs": int(adata.n_obs),
        "epochs": epochs,
        "fit_wall_s": wall,
        "epoch_s": epoch_s,
        "setup_s": wall - epoch_s,
        "train_cells_per_s": float(model.history_[-1, "cells_per_s"]) if epochs else None,
        "peak_rss_fit_gb": _proc_status_gb("VmHWM"),
        "max_tokens": model.max_tokens,
    }
    if prof is not None:
        out["profile_top"] = _profile_top(prof)
    if model_out:  # for re-running the prediction alone
        import pickle

        Path(model_out).write_bytes(pickle.dumps(model))
    if perts:
        obs = adata.obs
        ctrl = np.flatnonzero(obs[KEYS["perturbation_key"]].to_numpy() == KEYS["control_label"])
        # from the file itself: a backed view cannot be indexed again
        controls = ad.read_h5ad(path, backed="r")[ctrl[:1000]].to_memory()
        seen = set(obs[KEYS["perturbation_key"]].astype(str))
        rng = np.random.RandomState(0)
        pool = [g for g in map(str, adata.var_names) if g not in seen]
        targets = list(rng.choice(pool, perts, replace=False))
        rss_before = _proc_status_gb("VmRSS")
        reset = _reset_peak_rss()
        # one call for the whole submission: predict_perturbations chunks internally
        start = time.perf_counter()
        pred = model.predict_perturbations(controls, targets, n_cells=per_pert, output=output)
        out.update(
            predict_s=time.perf_counter() - start,
            predict_output=output,
            predicted_shape=[int(pred.n_obs), int(pred.n_vars)],
            predicted_nnz=int(pred.X.nnz) if hasattr(pred.X, "nnz") else None,
            rss_before_predict_gb=rss_before,
            peak_rss_predict_gb=_proc_status_gb("VmHWM") if reset else None,
            peak_rss_total_gb=max(_proc_status_gb("VmHWM"), out["peak_rss_fit_gb"]),
        )
    return out


def _run(path: Path, n: int, args, epochs: int, perts: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(path), str(n), "--epochs", str(epochs)]
    cmd += ["--threads", str(args.threads), "--cells-per-pert", str(args.cells_per_pert)]
    cmd += ["--perts", str(perts), "--output", args.output]
    cmd += ["--profile"] if args.profile else []
    if perts and args.path is not None:  # the submission's model, kept beside the data
        cmd += ["--model-out", str(args.path.with_suffix(f".{n}.pkl"))]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-2000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "N_OBS"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000])
    parser.add_argument("--setup-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--perts", type=int, default=300)
    parser.add_argument("--cells-per-pert", type=int, default=400)
    parser.add_argument("--output", choices=["counts", "log1p"], default="counts")
    parser.add_argument("--path", type=Path, help="h5ad to keep (written if missing)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--model-out", help="pickle the fitted model here (worker)")
    args = parser.parse_args()
    if args.worker:
        res = worker(
            args.worker[0],
            int(args.worker[1]),
            args.threads,
            args.perts,
            args.cells_per_pert,
            epochs=args.epochs,
            output=args.output,
            profile=args.profile,
            model_out=args.model_out,
        )
        print(json.dumps(res))
        return

    sizes = sorted(args.sizes)
    n_max = max(sizes + list(args.setup_sizes))
    runs = sorted([(n, 0) for n in args.setup_sizes] + [(n, 1) for n in sizes])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or Path(tmp) / "vcc_sized.h5ad"
        info_path = path.with_suffix(".json")
        if path.exists() and info_path.exists():
            info = json.loads(info_path.read_text())
            print(f"reusing {path} ({info['n_cells']:,} cells)", flush=True)
        else:
            start = time.perf_counter()
            info = write_blocks(path, n_max, GENES)
            info.update(n_cells=n_max, write_s=time.perf_counter() - start)
            info_path.write_text(json.dumps(info))
        if info["n_cells"] < n_max:
            raise SystemExit(f"{path} holds {info['n_cells']:,} cells, fewer than {n_max:,}.")
        file_gb = path.stat().st_size / 1e9
        write_s = info["write_s"]
        print(f"{path}: {file_gb:.2f} GB, written in {write_s:.0f} s", flush=True)
        for n, epochs in runs:
            perts = args.perts if (n, epochs) == (sizes[-1], 1) else 0
            results.append(_run(path, n, args, epochs, perts))
            print({k: v for k, v in results[-1].items() if k != "profile_top"}, flush=True)

    rows = [
        [
            r["n_obs"],
            GENES,
            r["epochs"],
            round(r["setup_s"], 1),
            round(r["epoch_s"], 1) if r["epochs"] else "–",
            round(r["fit_wall_s"], 1),
            round(r["train_cells_per_s"]) if r["epochs"] else "–",
            round(r["peak_rss_fit_gb"], 2),
            round(r["load"], 1),
        ]
        for r in results
    ]
    big = next(r for r in results if "predict_s" in r) if args.perts else results[-1]
    n = np.array([r["n_obs"] for r in results])
    s = np.array([r["setup_s"] for r in results])
    # setup growth exponent between the smallest and largest size (1 = linear)
    exponent = float(np.log(s[-1] / s[0]) / np.log(n[-1] / n[0])) if len(n) > 1 else None
    notes = (
        f"Simulated {GENES:,}-gene screen, raw counts, CSR h5ad of {info['n_cells']:,} cells "
        f"({info['nnz']:,} non-zeros, {file_gb:.2f} GB, written in {write_s:.0f} s), read "
        'with `anndata.read_h5ad(path, backed="r")` (first n rows for smaller sizes). '
        f"`PerturbationRegressor(max_epochs=1, crossfit=0, n_jobs={args.threads}, "
        f"random_state=0)`, defaults otherwise (max_tokens={big['max_tokens']}), each fit "
        "in a fresh subprocess; rows with 0 epochs are setup only (`max_epochs=0`). setup = "
        "fit wall time minus the epoch (training + validation on 10 % of perturbations). "
        "Setup growth exponent between the smallest and largest size: "
        + (f"{exponent:.2f} (1 = linear). " if exponent is not None else "n/a. ")
    )
    if "predict_s" in big:
        notes += (
            f"Prediction (model of the {big['n_obs']:,}-cell fit): {args.perts} perturbations "
            f"never seen in training x {args.cells_per_pert} cells (from 1,000 controls) on "
            f"{GENES:,} genes, ONE `predict_perturbations(..., output={args.output!r})` call "
            f"(chunked inside): {big['predict_s']:.0f} s, output {big['predicted_shape']} "
            f"({big['predicted_nnz']:,} non-zeros), peak RSS of the prediction "
            f"{big['peak_rss_predict_gb']:.2f} GB (process peak reset after the fit; RSS "
            f"before it {big['rss_before_predict_gb']:.2f} GB). "
        )
    notes += (
        "Nothing is extrapolated: the VCC training set (~220,000 cells) was run only if "
        "listed. 2 shared CPU cores: `load` = 1-minute load average when the fit started."
    )
    out = write_result(
        "vcc_scale",
        title="VCC-sized run: 18,080 genes from a backed h5ad, one epoch end to end",
        columns=[
            "cells",
            "genes",
            "epochs",
            "setup s",
            "epoch s",
            "fit wall s",
            "train cells/s",
            "peak RSS GB",
            "load",
        ],
        rows=rows,
        notes=notes,
        extra={"raw": results, "file_gb": file_gb, "write_s": write_s, "sizes": info},
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
