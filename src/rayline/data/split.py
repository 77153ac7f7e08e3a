"""Deterministic train / val / test assignment.

A row's split is a function of its content (or of its key column) and the seed, never of
which file or block it came in or how many workers read it: each row is hashed on its own
(pandas' SipHash of the typed values, salted by the seed), the hash mapped to [0, 1) and cut
at the configured fractions. Re-running the same config on the same data yields the same
splits, and adding new rows does not move old ones.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from rayline.config import SplitConfig

SPLIT_COL = "_rayline_split"
SPLITS = ("train", "val", "test")
QUARANTINE = "quarantine"


def _hash_key(seed: int) -> str:
    # pandas wants exactly 16 characters of salt.
    return hashlib.sha256(f"rayline-split-{seed}".encode()).hexdigest()[:16]


def split_fractions(df: pd.DataFrame, cfg: SplitConfig, columns: list[str]) -> np.ndarray:
    """Each row's position in [0, 1), hashed from ``cfg.key`` or from ``columns``."""
    frame = df[[cfg.key]] if cfg.key else df[sorted(columns)]
    hashed = pd.util.hash_pandas_object(frame, index=False, hash_key=_hash_key(cfg.seed))
    # Top 53 bits give an exactly representable float in [0, 1).
    return (hashed.to_numpy(dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign_split(df: pd.DataFrame, cfg: SplitConfig, columns: list[str]) -> np.ndarray:
    """The split name ("train", "val" or "test") of every row of ``df``."""
    u = split_fractions(df, cfg, columns)
    return np.where(u < cfg.train, "train", np.where(u < cfg.train + cfg.val, "val", "test"))
