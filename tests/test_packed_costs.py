"""The packed path's measured constants come from one data file, lstm_odyssey/packed/costs.json: the planner
and the time cuts use its numbers, and a changed copy of it changes the plan."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import lstm_odyssey.packed
from lstm_odyssey.packed import costs, plan, stacked

RAW = Path(lstm_odyssey.packed.__file__).with_name("costs.json")


def test_the_constants_in_use_are_the_files_numbers():
    raw = json.loads(RAW.read_text())
    cut, planned = raw["cuts"], raw["plan"]
    assert (stacked.STEP_SHARED_US, stacked.TRIAL_STEP_US, stacked.SEGMENT_US) == (
        cut["step_shared_us"], tuple(cut["trial_step_us"]), cut["segment_us"])
    assert (plan.ALONE_COST, plan.PACK_COST) == (tuple(planned["alone_cost_ms"]), tuple(planned["pack_cost_ms"]))
    assert plan.WIDTH_CAP == tuple(map(tuple, planned["width_cap"]))
    assert (plan.WIDEST_BEYOND, plan.GPU_WIDTH) == (planned["widest_beyond"], planned["gpu_width"])
    for section in (cut, planned):  # each says how to regenerate it
        assert section["measured"]["command"].startswith("python -m benchmarks.")


def test_a_changed_copy_of_the_file_changes_the_plan_and_the_cut_prices(tmp_path, monkeypatch):
    sizes = [20] * 12 + [60] * 6
    before, prices = plan.plan_packs(sizes, "auto", "cpu", plan.REFERENCE_BATCH), stacked.cut_prices(60, 8)
    assert any(len(group) > 1 for group in before)
    data = costs.load()
    data["plan"]["alone_cost_ms"] = [1.0, 0.0]  # trials alone almost free: no pack pays
    data["cuts"]["segment_us"] *= 2
    copy = tmp_path / "costs.json"
    copy.write_text(json.dumps(data))
    monkeypatch.setattr(costs, "COSTS_FILE", copy)
    try:
        importlib.reload(plan)
        importlib.reload(stacked)
        assert plan.plan_packs(sizes, "auto", "cpu", plan.REFERENCE_BATCH) == [[k] for k in range(len(sizes))]
        assert stacked.cut_prices(60, 8) == (prices[0], 2 * prices[1])
    finally:
        monkeypatch.undo()
        importlib.reload(plan)
        importlib.reload(stacked)
    assert plan.plan_packs(sizes, "auto", "cpu", plan.REFERENCE_BATCH) == before and stacked.cut_prices(60, 8) == prices
