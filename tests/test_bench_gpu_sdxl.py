"""bench/gpu_sdxl.py: its CPU smoke mode runs end to end, and its full-size shapes are SDXL's.

The GPU figures come from a GPU machine (bench/README.md); this keeps the script
working between such runs, and checks that what it would time there is the real
SDXL 1.0 (weights and FLOPs per step as counted on the published configs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_sdxl.py"


@pytest.mark.slow
def test_smoke_mode_times_every_plan_through_the_worker_code(tmp_path):
    """--smoke: each plan and batch timed, both stages' iterations per second, FLOPs counted, JSON written."""
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {(row["plan"], row["batch"]): row for row in result["rows"]}
    assert set(rows) == {("eager", 1), ("eager", 2), ("all-exact", 1), ("all-exact", 2)}
    for row in rows.values():
        assert row["seconds_per_image"] > 0 and row["base_it_s"] > 0 and row["refiner_it_s"] > 0, row
        assert row["share_of_peak"] > 0, row
        assert row["note"] == ""
    assert result["job"] == {"size": 128, "steps": 10, "refiner_percent": 80, "scheduler": "DPM++ 2M Karras"}
    assert result["flops_per_image"] > 1e9
    # The table is printed too, with the levers of each plan.
    assert "channels-last, fused-qkv" in done.stdout and "FLOP counter" in done.stdout
    assert "Traceback" not in done.stderr and "Writing model shards" not in done.stderr


@pytest.mark.slow  # counts full-size SDXL's FLOPs on meta tensors
def test_full_size_shapes_are_sdxl_1_0():
    """bench/sdxl/full.json: 2.57 billion base UNet weights; 13.5 and 14.6 TFLOP per CFG step at 1024²."""
    torch = pytest.importorskip("torch")
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    config = json.loads((ROOT / "bench" / "sdxl" / "full.json").read_text())

    def step(unet_config, context, time_ids):
        with torch.device("meta"):
            unet = UNet2DConditionModel(**unet_config)
            latents = torch.randn(2, 4, 128, 128)  # 1024² with classifier-free guidance
            conditions = {"text_embeds": torch.randn(2, 1280), "time_ids": torch.randn(2, time_ids)}
            tokens = torch.randn(2, 77, context)
            with FlopCounterMode(display=False) as counter:
                unet(latents, torch.tensor([500.0, 500.0]), tokens, added_cond_kwargs=conditions)
        return unet, counter.get_total_flops() / 1e12

    base, base_tflop = step(config["unet"], 2048, 6)
    _, refiner_tflop = step(config["refiner_unet"], 1280, 5)
    assert sum(p.numel() for p in base.parameters()) == 2_567_463_684
    assert round(base_tflop, 1) == 13.5
    assert round(refiner_tflop, 1) == 14.6
