"""Finding a scheduler-stopped trial's best checkpoint when its records name none that exists."""

from __future__ import annotations

import json

from rayline.train import checkpoints
from rayline.train.loop import COMPLETE_FILE
from rayline.tune import _on_disk


def _ckpt(tmp_path, name: str, epoch: int | None) -> str:
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(b"w")
    if epoch is not None:
        (d / COMPLETE_FILE).write_text(json.dumps({"epoch": epoch, "global_step": 1}))
    return str(d)


def test_a_local_mode_trial_s_own_index_gives_its_best_kept_checkpoint(tmp_path):
    trial = tmp_path / "trial-a"
    for epoch, value in ((1, 0.5), (2, 0.3), (3, 0.4)):
        src = _ckpt(tmp_path / "src", f"e{epoch}", epoch - 1)
        checkpoints.persist(src, str(trial / "checkpoints"), epoch, {"val_metric": value}, 2, "min")
    row = _on_disk(str(trial), [], "min")
    assert row["val_metric"] == 0.3 and row["checkpoint_path"].endswith("checkpoint_epoch-00002")


def test_a_ddp_trial_s_train_checkpoints_are_scored_by_their_epoch_s_history_row(tmp_path):
    trial = tmp_path / "trial-b"
    first = _ckpt(trial, "checkpoint_2026-12-03_10-00-00.000001", 0)  # epoch 1
    third = _ckpt(trial, "checkpoint_2026-12-03_10-00-02.000001", 2)  # epoch 3
    _ckpt(trial, "checkpoint_2026-12-03_10-00-03.000001", None)  # incomplete: never chosen
    history = [{"epoch": e, "val_metric": v} for e, v in ((1, 0.5), (2, 0.3), (3, 0.4), (4, 0.1))]
    # Epoch 2's checkpoint is gone, epoch 4's never completed: the best that exists is 3.
    row = _on_disk(str(trial), history, "min")
    assert row["epoch"] == 3 and row["checkpoint_path"] == third
    assert _on_disk(str(trial), history, "max")["checkpoint_path"] == first
    history[2]["val_metric"] = float("nan")
    assert _on_disk(str(trial), history, "min")["checkpoint_path"] == first


def test_nothing_on_disk_is_none(tmp_path):
    assert _on_disk(str(tmp_path / "missing"), [{"epoch": 1, "val_metric": 0.1}], "min") is None
    assert _on_disk(str(tmp_path), [], "min") is None


def test_an_epoch_tune_never_heard_of_is_ranked_by_its_marker_s_metrics(tmp_path):
    """ASHA stopped the trial after epoch 2's report; its Train run finished epochs 3 and 4,
    whose checkpoints replaced those of epochs 1 and 2 (Train keeps the best two)."""
    trial = tmp_path / "trial-c"
    for name, epoch, value in (("checkpoint_a", 2, 0.62), ("checkpoint_b", 3, 0.61)):
        d = trial / name
        d.mkdir(parents=True)
        marker = {"epoch": epoch, "global_step": 9, "val": {"val_metric": value}}
        (d / COMPLETE_FILE).write_text(json.dumps(marker))
    history = [{"epoch": 1, "val_metric": 0.635}, {"epoch": 2, "val_metric": 0.626}]
    row = _on_disk(str(trial), history, "min")
    assert row["epoch"] == 4 and row["val_metric"] == 0.61
    assert row["checkpoint_path"] == str(trial / "checkpoint_b")
