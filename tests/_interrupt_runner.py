"""Run ``sktx train`` with a tiny model that signals when epoch 1 is done and then
trains slowly, so a test can kill it mid-epoch (used by test_interruption.py)."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from skorch.callbacks import Callback

from sktx import cli
from sktx.cli import _estimator
from sktx.regressor import PerturbationRegressor


class _SlowAfterFirstEpoch(Callback):
    def __init__(self, marker: str):
        self.marker = marker

    def on_batch_end(self, net, **kwargs):
        if len(net.history) >= 2:  # inside epoch 2+: slow down so the signal lands mid-epoch
            time.sleep(0.5)

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 1:
            Path(self.marker).write_text("1")


def main() -> None:
    marker = sys.argv[1]
    # import ourselves by module name (a callback defined outside sktx is left out of
    # the checkpoint, so resuming runs at full speed)
    from _interrupt_runner import _SlowAfterFirstEpoch as slow

    def build(cfg, quiet):
        return PerturbationRegressor(
            **asdict(cfg.keys),
            max_epochs=cfg.epochs,
            set_size=8,
            d_model=16,
            n_layers=1,
            gene_sets=False,
            n_jobs=1,
            random_state=cfg.seed,
            callbacks=[slow(marker)],
        )

    _estimator._build_estimator = build
    cli.main(sys.argv[2:])


if __name__ == "__main__":
    main()
