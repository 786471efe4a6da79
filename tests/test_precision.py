"""precision="auto": bf16 only where the CPU has it natively and it is measured faster."""

from __future__ import annotations

import numpy as np
import pytest
from _accelerate_runner import query

from sktx.datasets import make_perturbseq
from sktx.nn import _precision
from sktx.nn._precision import cpu_autocast_precision
from sktx.regressor import PerturbationRegressor

# documented in docs/model.md ("Precision"): bf16 autocast moves predicted log1p
# deltas by at most this much from the fp32 path (measured: 3.7e-4 on this case)
BF16_TOLERANCE = 0.01


@pytest.fixture
def fresh_cache():
    cpu_autocast_precision.cache_clear()
    yield
    cpu_autocast_precision.cache_clear()


def test_auto_is_fp32_without_native_bf16(monkeypatch, fresh_cache):
    monkeypatch.setattr(_precision, "_native_bf16", lambda: False)
    monkeypatch.setattr(_precision, "_step_seconds", pytest.fail)  # must not even time
    assert cpu_autocast_precision() == "32"
    assert PerturbationRegressor(precision="auto")._resolve_precision() == "32"


@pytest.mark.parametrize(("bf16_s", "expected"), [(0.5, "bf16"), (0.95, "32"), (2.0, "32")])
def test_auto_picks_the_measured_faster_dtype(monkeypatch, fresh_cache, bf16_s, expected):
    monkeypatch.setattr(_precision, "_native_bf16", lambda: True)
    monkeypatch.setattr(_precision, "_step_seconds", lambda d: 1.0 if d is None else bf16_s)
    assert cpu_autocast_precision() == expected
    assert PerturbationRegressor(precision="auto")._resolve_precision() == expected


def test_decision_is_cached_per_process(monkeypatch, fresh_cache):
    calls = []
    monkeypatch.setattr(_precision, "_native_bf16", lambda: True)
    monkeypatch.setattr(_precision, "_step_seconds", lambda d: calls.append(d) or 1.0)
    cpu_autocast_precision()
    cpu_autocast_precision()
    assert len(calls) == 2  # one fp32 and one bf16 timing, once


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    real_open = open

    def fake(flags):
        def _open(path, *a, **kw):
            if path == "/proc/cpuinfo":
                f = tmp_path / "cpuinfo"
                f.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
                return real_open(f, *a, **kw)
            return real_open(path, *a, **kw)

        return _open

    monkeypatch.setattr("builtins.open", fake("fpu avx2 avx512f avx512_bf16 amx_tile"))
    assert _precision._native_bf16()
    monkeypatch.setattr("builtins.open", fake("fpu avx2 fma"))
    assert not _precision._native_bf16()


def test_bf16_predictions_within_documented_tolerance_of_fp32():
    adata = make_perturbseq(n_cells=400, n_genes=80, n_perturbations=6, random_state=0)
    out = {}
    for prec in ("32", "bf16"):
        # one network, no validation split: its residual is kept as is (scale 1), so the
        # network's precision reaches the predictions (the out-of-fold factor of the
        # crossfit default drops a 2-epoch residual on 6 perturbations to 0)
        m = PerturbationRegressor(
            max_epochs=2, precision=prec, random_state=0, n_jobs=1, crossfit=0
        )
        m.set_params(d_model=16, validation_fraction=0.0).fit(adata)
        assert m.precision_ == prec
        # perturbations it did not fit: a fitted one is given back as fitted
        out[prec] = m.predict_deltas(query(adata)).to_numpy()
    diff = np.abs(out["32"] - out["bf16"])
    assert diff.max() <= BF16_TOLERANCE
    assert diff.max() > 0  # bf16 autocast really ran
