"""Learning-rate schedules as pure functions of the optimizer step (no torch state)."""

from __future__ import annotations

import math

ONECYCLE_DEFAULT_WARMUP = 0.3
ONECYCLE_START = 1 / 25
ONECYCLE_END = 1e-4


def lr_factor(step: int, total_steps: int, kind: str, warmup_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    - ``constant``: linear warmup over ``warmup_fraction`` of the steps, then 1.
    - ``cosine``: linear warmup, then cosine decay to 0 at ``total_steps``.
    - ``onecycle``: from 1/25 up to 1 over the warmup (30% of the steps when
      ``warmup_fraction`` is 0), then cosine down to 1e-4, as in Smith's one-cycle policy.

    Steps past ``total_steps`` keep the final value, so an estimate of the step count that
    runs a little short never sends the rate negative or back up.
    """
    total = max(1, total_steps)
    step = min(max(0, step), total)
    if kind == "onecycle":
        warm = int(round((warmup_fraction or ONECYCLE_DEFAULT_WARMUP) * total))
        if step < warm:
            return ONECYCLE_START + (1 - ONECYCLE_START) * step / warm
        progress = (step - warm) / max(1, total - warm)
        return ONECYCLE_END + (1 - ONECYCLE_END) * 0.5 * (1 + math.cos(math.pi * progress))
    warm = int(round(warmup_fraction * total))
    if step < warm:
        return (step + 1) / (warm + 1)
    if kind == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0
