"""Which autocast dtype is faster for the gene-token network on this process's CPU.

bf16 autocast only pays off where the CPU multiplies bf16 natively
(``avx512_bf16`` / AMX); elsewhere oneDNN emulates it and the casts make the
step slower (measured on this project's 2-core AVX2 EPYC: a full step at
18,080 genes 2.0x, the timed block below 2.5x). So
``precision="auto"`` on CPU checks for native support first and, only if
present, times one forward + backward of a block shaped like the network's
(tokens x 64 features, fp32 vs bf16 autocast) and keeps the faster dtype. The
answer is cached for the process: the timing (only on native-bf16 CPUs) runs once.
"""

from __future__ import annotations

import functools
import time

import torch

__all__ = ["cpu_autocast_precision"]

# bf16 must be at least this much faster to be chosen (timing noise on shared cores)
_MARGIN = 0.9


def _native_bf16() -> bool:
    """True where the CPU advertises native bf16 arithmetic (x86 avx512_bf16 / AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    # no /proc/cpuinfo (macOS, Windows): ask oneDNN (private API, hence the guard)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _step_seconds(dtype: torch.dtype | None, reps: int = 2) -> float:
    """Best time of a forward + backward of a feed-forward block like the network's."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8192, 64, generator=gen, requires_grad=True)
    block = torch.nn.Sequential(
        torch.nn.LayerNorm(64), torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64)
    )
    best = float("inf")
    for i in range(reps + 1):  # the first run warms up oneDNN's kernel cache
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = block(x)
        out.float().sum().backward()
        if i:
            best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def cpu_autocast_precision() -> str:
    """``"bf16"`` where bf16 autocast is native and measured faster on this CPU, else ``"32"``.

    Cached per process (call ``cpu_autocast_precision.cache_clear()`` to measure again).

    Examples
    --------
    >>> cpu_autocast_precision() in ("32", "bf16")
    True
    """
    if not _native_bf16():
        return "32"
    fp32 = _step_seconds(None)
    bf16 = _step_seconds(torch.bfloat16)
    return "bf16" if bf16 < _MARGIN * fp32 else "32"
