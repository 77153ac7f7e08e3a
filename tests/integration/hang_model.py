"""A user model for the hang test: rank 1 stops answering collectives at its 4th forward pass.

Loaded by Ray Train workers as ``tests.integration.hang_model:build``. Rank 0 goes on to the
backward pass, whose DDP gradient all-reduce then waits for rank 1 forever -- unless the
collective timeout fails the attempt.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn


class _StallsOnRankOne(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Linear(in_dim, out_dim)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.training and self.calls == 4 and torch.distributed.get_rank() == 1:
            time.sleep(3600)
        return self.net(x)


def build(model_cfg: dict[str, Any], in_dim: int, out_dim: int) -> nn.Module:
    return _StallsOnRankOne(in_dim, out_dim)
