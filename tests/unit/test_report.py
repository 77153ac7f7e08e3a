"""The report's figures and page, the model card, and what the served model imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from rayline import analysis, card, report_html


def _models(task: str):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90) if task == "classification" else rng.normal(size=90)
    if task == "classification":
        a = rng.dirichlet([1, 1, 1], 90)
        b = np.eye(3)[y] * 0.7 + 0.1
        return {"challenger": (y, b), "champion": (y, a), "baseline": (y, a[:, ::-1])}
    return {"challenger": (y, y + rng.normal(0, 0.2, 90)), "champion": (y, y * 0.5)}


def test_classification_figures_and_a_self_contained_page(tmp_path):
    models = _models("classification")
    paths = report_html.figures("classification", models, ["a", "b", "c"], tmp_path)
    assert set(paths) == {"roc", "precision_recall", "confusion_matrix", "reliability"}
    for p in paths.values():
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    y, out = models["challenger"]
    doc = {
        "title": "t <x>",
        "task": "classification",
        "facts": {"run": "r"},
        "models": {
            n: {
                "metrics": {"accuracy": 0.5},
                "intervals": {"accuracy": (0.4, 0.6)},
                "detail": analysis.classification_detail(yy, o, ["a", "b", "c"]),
            }
            for n, (yy, o) in models.items()
        },
        "metric_names": ["accuracy"],
        "slices": [],
        "gate": {"passed": False, "reasons": ["x: ok", "y: FAIL"], "others": {}},
        "level": 0.95,
        "resamples": 10,
        "seed": 0,
    }
    page = report_html.render_html(doc, paths)
    assert page.count("data:image/png;base64,") == 4
    assert "t &lt;x&gt;" in page and "<x>" not in page  # escaped
    assert "[0.400, 0.600]" in page and "REJECTED" in page


def test_regression_figures(tmp_path):
    paths = report_html.figures("regression", _models("regression"), None, tmp_path)
    assert set(paths) == {
        "residuals_vs_predicted",
        "residual_histogram",
        "predicted_vs_actual",
        "error_by_target_decile",
    }


def test_card_names_data_code_metrics_and_gate_and_fits_mlflow():
    text = card.render(
        {
            "model_name": "m",
            "run_name": "r1",
            "mlflow_run_id": "abc",
            "description": "For testing.",
            "task": "classification",
            "target": "y",
            "data": {
                "fingerprint": "f" * 64,
                "rows_in": 10,
                "rows_ok": 9,
                "rows_quarantined": 1,
                "bad_fraction": 0.1,
                "max_bad_fraction": 0.2,
                "splits": {"train": 5, "val": 2, "test": 2},
                "top_reasons": [{"reason": "age.max", "rows": 1}],
                "files": ["/d/a.parquet"],
                "quarantine_path": "/q",
            },
            "code": {"commit": "deadbeef", "dirty": True},
            "config_hash": "h",
            "metrics": {"challenger": {"accuracy": 0.9}, "champion": {"accuracy": 0.8}},
            "intervals": {"challenger": {"accuracy": (0.85, 0.95)}},
            "level": 0.95,
            "slices": [
                {
                    "column": "c",
                    "slice": "v",
                    "rows": 3,
                    "metrics": {"challenger": {"accuracy": 1.0}},
                }
            ],
            "gate": {"passed": True, "reasons": ["accuracy 0.9 >= min 0.5: ok"]},
            "baseline": "sklearn.linear_model.LogisticRegression",
            "report": "reports/evaluation_report.html",
        }
    )
    for part in (
        "For testing.",
        "f" * 64,
        "9 kept + 1 quarantined",
        "age.max (1 rows)",
        "`/q`",
        "`deadbeef` (with uncommitted changes)",
        "| accuracy | 0.9000 [0.850, 0.950] | 0.8000 |",
        "| c | v | 3 | 1.0000 |",
        "## Gate: passed",
        "LogisticRegression",
    ):
        assert part in text, part
    long = text + "x\n" * 6000
    cut = card.description(long)
    assert len(cut) <= card.DESCRIPTION_MAX and "model_card.md" in cut
    assert card.description(text) == text


def test_the_served_model_imports_neither_sklearn_nor_matplotlib():
    code = (
        "import sys, rayline.serving, rayline.inference, rayline.metrics;"
        "bad = [m for m in ('sklearn', 'matplotlib') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
