"""A user model for the kill-and-resume test: an MLP that takes 0.25 s per training batch.

Loaded as ``tests.integration.slow_model:build``. Local-mode epochs on the test's tiny table
otherwise take milliseconds, too short to kill a driver in the middle of a chosen trial.
"""

from __future__ import annotations

import os
import time
from typing import Any

from torch import nn


class _Slow(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, 16), nn.ReLU(), nn.Linear(16, out_dim))

    def forward(self, x):
        if self.training:
            # A run that needs no window to kill in (the uninterrupted run it is compared
            # with) sets 0: the math is the same.
            time.sleep(float(os.environ.get("RAYLINE_TEST_SLOW_BATCH_S", "0.25")))
        return self.net(x)


def build(model_cfg: dict[str, Any], in_dim: int, out_dim: int) -> nn.Module:
    return _Slow(in_dim, out_dim)
