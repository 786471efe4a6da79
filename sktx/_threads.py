"""Keep torch's CPU thread count from being changed behind our back.

numba (used by scanpy's ``normalize_total`` and ``highly_variable_genes``)
starts its OpenMP threading layer on first use and sets the OpenMP thread
count of the calling thread to ``NUMBA_NUM_THREADS``. torch uses the same
``libgomp``, so this silently replaced the thread count set with
``PerturbationRegressor(n_jobs=...)`` (or by the user) for the rest of a fit.
The first fit in a process then trained with a different number of threads,
hence a different float32 reduction order (e.g. LayerNorm's weight gradients
are summed per thread), than every later one: same-seed fits differed by ~1e-6.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["keep_torch_threads"]


@contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block if code inside changed it.

    Does nothing (and does not import torch) when torch is not imported yet.

    Examples
    --------
    >>> import torch
    >>> n = torch.get_num_threads()
    >>> with keep_torch_threads():
    ...     torch.set_num_threads(n + 1)
    >>> torch.get_num_threads() == n
    True
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
