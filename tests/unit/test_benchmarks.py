"""The GPU benchmark's --dry-run runs end to end on CPU and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_throughput.py"

EXPECTED_KEYS = {
    "benchmark",
    "dry_run",
    "device",
    "device_name",
    "bf16",
    "ratio",
    "ratio_row",
    "loop_ratio",
    "rows_per_s",
    "tflops",
    "peak_bf16_tflops",
    "mfu",
    "fixed_overhead_s",
    "ray",
    "params",
    "batch",
}


def test_gpu_throughput_dry_run_prints_json_last():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    out = json.loads(lines[-1])
    assert EXPECTED_KEYS <= set(out), EXPECTED_KEYS - set(out)
    assert out["benchmark"] == "gpu_throughput"
    assert out["dry_run"] is True
    assert out["device"] == "cpu" and out["bf16"] is False
    assert out["peak_bf16_tflops"] is None
    assert {"limit", "limit+item"} <= set(out["rows_per_s"])
    assert out["ratio_row"] in out["rows_per_s"]
    assert all(v > 0 for v in out["rows_per_s"].values())
    assert out["ratio"] > 0 and out["params"] > 0
    assert out["ray"]["ran"] is False


def test_peak_table_matches_card_names():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_throughput as g
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert g.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert g.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert g.peak_tflops("NVIDIA H200") == 989.0
    assert g.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert g.peak_tflops("Some Unknown GPU") is None
    assert g.peak_tflops(None) is None
