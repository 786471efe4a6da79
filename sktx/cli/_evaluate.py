"""``sktx evaluate``: score predicted cells against real ones (VCC metrics)."""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sktx.cli._app import (
    BadInput,
    CellTypeKey,
    ControlLabel,
    Debug,
    PertKey,
    Quiet,
    _echo,
    _examples,
    _guard,
    _print_metrics,
    app,
)
from sktx.cli._estimator import _make, _require
from sktx.cli._io import Keys, _keys_for, _load, _load_pred


class BaselineChoice(StrEnum):
    # The references `sktx evaluate` builds from the real cells alone: `mean` is
    # sktx.metrics.build_mean_baseline, `control` is BASELINES["control"]. A training run
    # scores every entry of sktx.baselines.BASELINES (sktx.cli._runner._baselines).
    none = "none"
    mean = "mean"
    control = "control"


class BaselineCells(StrEnum):
    # How the `mean` baseline builds cells: from the real controls as sktx models do
    # (the fair bar), or one profile per perturbation (cell-eval's baseline convention).
    controls = "controls"
    profile = "profile"


def _restrict_to_predicted(real, pred, keys: Keys, quiet: bool):
    """Score the perturbations the prediction covers; reject ones the real data lacks."""
    key, ctrl = keys.perturbation_key, keys.control_label
    real_labels = real.obs[key].astype(str)
    predicted = set(pred.obs[key].astype(str)) - {ctrl}
    unknown = sorted(predicted - set(real_labels))
    if unknown:
        raise BadInput(
            f"--pred has perturbations without real cells in --real: {unknown[:5]}"
            + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        )
    if not predicted:
        raise BadInput(f"--pred has no perturbed cells (only `{ctrl}` in `obs[{key!r}]`)")
    unscored = sorted(set(real_labels) - predicted - {ctrl})
    if unscored:
        _echo(
            quiet,
            f"scoring the {len(predicted)} predicted perturbations; "
            f"{len(unscored)} more in --real are not predicted and not scored",
        )
        return real[real_labels.isin([*predicted, ctrl]).to_numpy()].copy()
    return real


def _warn_trained(pred, keys: Keys) -> None:
    """Scores of perturbations the model was trained on say nothing about unseen ones."""
    import warnings

    from sktx.data import canonical_obs_labels

    trained = (pred.uns.get("sktx") or {}).get("trained_perturbations")
    if trained is None or len(trained) == 0:
        return
    labels = canonical_obs_labels(pred, key=keys.perturbation_key, control_label=keys.control_label)
    seen = sorted(set(labels.tolist()) & set(map(str, trained)) - {keys.control_label})
    if seen:
        warnings.warn(
            f"{len(seen)} scored perturbation(s) were seen in training ({', '.join(seen[:5])}"
            + (" ..." if len(seen) > 5 else "")
            + "): their scores measure fit, not prediction of unseen perturbations. Score the "
            "held-out ones (heldout.h5ad / query.h5ad of the run).",
            UserWarning,
            stacklevel=2,
        )


@app.command(
    epilog=_examples(
        "sktx evaluate --real heldout.h5ad --pred pred.h5ad",
        "sktx evaluate --real heldout.h5ad --pred pred.h5ad --baseline none --out scores",
        "",
        "Writes <out>.json, <out>.csv (mean metrics per model) and",
        "<out>_per_perturbation.csv.",
    )
)
@_guard
def evaluate(
    real: Annotated[str, typer.Option("--real", help="Real cells (.h5ad) incl. controls.")],
    pred: Annotated[str, typer.Option("--pred", help="Predicted cells (.h5ad).")],
    baseline: Annotated[
        BaselineChoice,
        typer.Option("--baseline", help="Also score a baseline built from the real data."),
    ] = BaselineChoice.mean,
    baseline_cells: Annotated[
        BaselineCells,
        typer.Option(
            "--baseline-cells",
            help="How the mean baseline builds cells: 'controls' (the real controls carried "
            "to its profile, zeros kept, as sktx models build cells) or 'profile' (cell-eval).",
        ),
    ] = BaselineCells.controls,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output prefix [default: <pred> without .h5ad].")
    ] = None,
    perturbation_key: PertKey = None,
    control_label: ControlLabel = None,
    cell_type_key: CellTypeKey = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Score predictions against real cells with the VCC metrics (DES, PDS, MAE, ...)."""
    from sktx.metrics import build_mean_baseline
    from sktx.report import evaluate_predictions

    keys = _keys_for(real, perturbation_key, control_label, cell_type_key, quiet=quiet)
    real_ad = _load(real, keys, n_cells=None, seed=0, option="--real")
    pred_path, pred_ad = _load_pred(pred, keys)
    _warn_trained(pred_ad, keys)
    real_ad = _restrict_to_predicted(real_ad, pred_ad, keys, quiet)
    preds = {"prediction": pred_ad}
    kw = asdict(keys)
    if baseline is BaselineChoice.mean and baseline_cells is BaselineCells.profile:
        preds["mean"] = build_mean_baseline(real_ad, **kw)
    elif baseline is BaselineChoice.mean:
        (BASELINES,) = _require("sktx.baselines", "BASELINES")
        from sktx.model_selection import make_query

        mean = _make(BASELINES["mean"], cells=baseline_cells.value, **kw).fit(real_ad)
        preds["mean"] = mean.predict(make_query(real_ad, **kw))
    elif baseline is BaselineChoice.control:
        (BASELINES,) = _require("sktx.baselines", "BASELINES")
        from sktx.model_selection import make_query

        query = make_query(real_ad, **kw)
        preds["control"] = _make(BASELINES["control"], **kw).fit(real_ad).predict(query)
    scores = evaluate_predictions(real_ad, preds, **kw)
    metrics = scores["metrics"]
    prefix = out if out is not None else pred_path.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(f"{prefix}.csv", index_label="model")
    Path(f"{prefix}.json").write_text(json.dumps(metrics.to_dict(orient="index"), indent=2) + "\n")
    scores["per_perturbation"].to_csv(f"{prefix}_per_perturbation.csv", index=False)
    if not quiet:
        _print_metrics(metrics, "prediction")
        typer.echo(f"\nwrote {prefix}.json, {prefix}.csv, {prefix}_per_perturbation.csv")
