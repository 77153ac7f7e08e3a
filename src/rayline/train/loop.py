"""The per-worker training loop: a plain function that Ray Train runs on every DDP rank.

Setup, then epochs of: stream this rank's shard of the train split, step, evaluate on the
validation split (rank 0), report metrics, and checkpoint. Nothing here knows about Tune or
MLflow: the trainer module wires reports to them.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from rayline.data.features import FittedPreprocessor
from rayline.metrics import compute_metrics
from rayline.train.models import build_model

WEIGHTS_FILE = "model.pt"
STATE_FILE = "train_state.pt"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so that a rerun on CPU repeats itself."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class ShardCache:
    """A worker's shard, streamed from Ray Data once and then served from memory.

    Re-executing the Ray Data pipeline every epoch costs seconds of scheduling per epoch on a
    small machine, far more than the math for a shard that fits in memory. The first pass
    streams batches as usual and keeps them; once the kept bytes would pass ``max_bytes``
    the cache gives up and every epoch streams again, so large shards keep bounded memory.
    """

    def __init__(self, data_iter, batch_size: int, max_bytes: int, device, seed: int, shuffle: bool):
        self.data_iter = data_iter
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self.device = device
        self.seed = seed
        self.shuffle = shuffle
        self.tensors: dict[str, torch.Tensor] | None = None

    def epoch(self, epoch: int):
        """Yield this epoch's batches (dicts of tensors on the worker's device)."""
        if self.tensors is not None:
            yield from self._from_memory(epoch)
            return
        kept: list[dict[str, torch.Tensor]] | None = []
        size = 0
        for batch in self.data_iter.iter_torch_batches(
            batch_size=self.batch_size,
            device=self.device,
            local_shuffle_buffer_size=4 * self.batch_size if self.shuffle else None,
            local_shuffle_seed=self.seed * 1000 + epoch if self.shuffle else None,
        ):
            if kept is not None:
                size += sum(t.element_size() * t.nelement() for t in batch.values())
                kept = kept + [batch] if size <= self.max_bytes else None
            yield batch
        if kept:
            self.tensors = {k: torch.cat([b[k] for b in kept]) for k in kept[0]}

    def _from_memory(self, epoch: int):
        assert self.tensors is not None
        n = len(next(iter(self.tensors.values())))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
            order = torch.randperm(n, generator=g).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield {k: v[idx] for k, v in self.tensors.items()}


def _evaluate(model: nn.Module, batches, prep: FittedPreprocessor) -> dict[str, float]:
    model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for batch in batches:
            outs.append(model(batch["x"]).float().cpu().numpy())
            ys.append(batch["y"].cpu().numpy())
    if not outs:
        return {}
    y = np.concatenate(ys)
    output = prep.decode_output(np.concatenate(outs))
    y_true = prep.decode_output(y) if prep.task == "regression" else y
    return compute_metrics(prep.task, y_true, output)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train one DDP rank. ``config`` carries plain data only (it crosses process boundaries).

    Keys: ``model`` (ModelConfig as a dict), ``train`` (TrainConfig as a dict), ``prep``
    (the fitted preprocessor as JSON) and ``metric`` (the validation metric name).
    """
    import ray.train
    import ray.train.torch

    tcfg = config["train"]
    prep = FittedPreprocessor.from_json(config["prep"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    seed_everything(int(tcfg["seed"]))
    # Ray gives each worker OMP_NUM_THREADS = its CPUs; keep torch within that share so
    # that workers on one node do not fight over cores.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    model = build_model(config["model"], prep.output_dim, prep.num_outputs, prep=prep)
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    optimizer = _make_optimizer(tcfg["optimizer"], model.parameters(), tcfg["lr"], tcfg["weight_decay"])
    loss_fn = nn.CrossEntropyLoss() if prep.task == "classification" else nn.MSELoss()

    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        # A restarted worker group resumes from the last reported checkpoint.
        with checkpoint.as_directory() as d:
            _unwrap(model).load_state_dict(torch.load(os.path.join(d, WEIGHTS_FILE), weights_only=True))
            state = torch.load(os.path.join(d, STATE_FILE), weights_only=True)
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"]) + 1

    batch_size = int(tcfg["batch_size"])
    seed = int(tcfg["seed"])
    max_bytes = int(tcfg["cache_mb"] * 2**20)
    train_data = ShardCache(
        ray.train.get_dataset_shard("train"), batch_size, max_bytes, device, seed, shuffle=True
    )
    val_data = ShardCache(
        ray.train.get_dataset_shard("val"), batch_size, max_bytes, device, seed, shuffle=False
    )
    metric = config["metric"]

    for epoch in range(start_epoch, int(tcfg["epochs"])):
        model.train()
        loss_sum = torch.zeros(2, dtype=torch.float64)
        for batch in train_data.epoch(epoch):
            x, y = batch["x"], batch["y"]
            out = model(x)
            loss = loss_fn(out.squeeze(-1) if prep.task == "regression" else out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += torch.tensor([loss.item() * len(y), len(y)], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(loss_sum)
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum[0] / max(loss_sum[1], 1)),
            "train_rows": int(loss_sum[1]),
        }
        # Validation runs on rank 0 over the whole (unsplit) val split; the numbers are then
        # broadcast so that every rank reports the same dict.
        val = [_evaluate(model, val_data.epoch(epoch), prep) if rank == 0 else None]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast_object_list(val, src=0)
        metrics.update({f"val_{k}": v for k, v in (val[0] or {}).items()})
        metrics["val_metric"] = metrics.get(f"val_{metric}", float("nan"))

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save(_unwrap(model).state_dict(), os.path.join(tmp, WEIGHTS_FILE))
                torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch}, os.path.join(tmp, STATE_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
