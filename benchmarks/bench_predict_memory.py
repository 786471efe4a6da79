"""Peak memory of ONE predict_perturbations call at 18,080 genes, before and after chunking.

Sets up ``PerturbationRegressor(max_epochs=0, crossfit=0)`` on the first 2,500 cells
of a bench_vcc_scale h5ad (``--path``, written there if missing), then in a fresh
process per case predicts ``--perts`` unseen perturbations x 400 cells from 1,000
control cells in one call, with the code of this checkout (``new``) or of
``--before`` (``old``: ``sktx/_perturbations.py`` of that commit, via ``git show``);
wall time and peak RSS (``VmHWM``, reset just before the call).

    python benchmarks/bench_predict_memory.py --path /tmp/vcc_220k.h5ad --perts 60
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_backed import _proc_status_gb  # noqa: E402
from bench_vcc_scale import GENES, KEYS, _reset_peak_rss, write_blocks  # noqa: E402


def predict(path: str, model_path: str, code: str, output: str, perts: int) -> dict:
    import anndata as ad

    if code == "new":
        import sktx._perturbations as mod
    else:
        spec = importlib.util.spec_from_file_location("before", code)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    model = pickle.loads(Path(model_path).read_bytes())
    full = ad.read_h5ad(path, backed="r")
    obs = full.obs[:2500]
    ctrl = np.flatnonzero(obs[KEYS["perturbation_key"]].to_numpy() == KEYS["control_label"])
    controls = full[ctrl[:1000]].to_memory()
    seen = set(obs[KEYS["perturbation_key"]].astype(str))
    pool = [g for g in map(str, full.var_names) if g not in seen]
    targets = list(np.random.RandomState(0).choice(pool, perts, replace=False))
    before = _proc_status_gb("VmRSS")
    _reset_peak_rss()
    start = time.perf_counter()
    pred = mod.predict_perturbations(model, controls, targets, n_cells=400, output=output)
    return {
        "output": output,
        "shape": list(pred.shape),
        "predict_s": time.perf_counter() - start,
        "rss_before_gb": before,
        "peak_rss_gb": _proc_status_gb("VmHWM"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--perts", type=int, default=60)
    parser.add_argument("--before", default="fecd3f9")
    parser.add_argument("--skip-before", action="store_true", help="this checkout only")
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "CODE", "OUTPUT", "PERTS"))
    args = parser.parse_args()
    if args.worker:
        model, code, output, perts = args.worker
        print(json.dumps(predict(str(args.path), model, code, output, int(perts))))
        return
    if not args.path.exists():
        write_blocks(args.path, 10_000, GENES)
    import anndata as ad

    from sktx.regressor import PerturbationRegressor

    with tempfile.TemporaryDirectory() as tmp:
        model = PerturbationRegressor(**KEYS, max_epochs=0, crossfit=0, random_state=0)
        model.set_params(callbacks__progress=None)
        model.fit(ad.read_h5ad(args.path, backed="r")[:2500])
        model_path = Path(tmp) / "model.pkl"
        model_path.write_bytes(pickle.dumps(model))
        old = Path(tmp) / "before.py"
        old.write_text(
            subprocess.run(
                ["git", "show", f"{args.before}:sktx/_perturbations.py"],
                cwd=HERE,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        # the workers import sktx from this checkout, whatever is installed
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        for code in ([] if args.skip_before else [str(old)]) + ["new"]:
            for output in ("log1p", "counts"):
                cmd = [sys.executable, __file__, "--path", str(args.path), "--worker"]
                cmd += [str(model_path), code, output, str(args.perts)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                name = args.before if code != "new" else "this checkout"
                print(json.dumps({"code": name, **res}), flush=True)


if __name__ == "__main__":
    main()
