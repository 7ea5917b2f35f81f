"""The benchmarks run end to end on tiny settings and report what they claim to measure (no timing is
asserted: the figures belong in notes, measured on a quiet machine). The packed ones live in the repository's
benchmarks/ folder (importable here through pytest's pythonpath), the backend one in the package."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmarks import cuts, packs, report, study
from lstm_odyssey import bench
from lstm_odyssey.packed import costs, stacked
from lstm_odyssey.packed.plan import plan_packs


def test_the_packed_benchmark_times_every_case(tmp_path, capsys):
    out = tmp_path / "packed.json"
    packs.main(["--hidden", "24", "--widths", "2", "--drawn", "3", "--steps", "1", "--repeats", "1",
                "--trial-axes", "stacked", "--json", str(out)])
    result = json.loads(out.read_text())
    cases = {r["case"] for r in result["rows"]}
    assert {"single h=24", "pack h=24 K=2 stacked", "drawn singles", "drawn auto stacked"} <= cases
    assert all(r["trials_per_hour"] > 0 and len(r["seconds_all"]) == 1 for r in result["rows"])
    assert "| drawn auto stacked |" in capsys.readouterr().out


def test_the_study_benchmark_times_the_studys_own_trials_both_ways(tmp_path, capsys, monkeypatch):
    data = os.environ.get("LSTM_ODYSSEY_DATA")
    if not data or not (Path(data) / "jsb_chorales").is_dir():
        pytest.skip("needs the JSB Chorales copy under $LSTM_ODYSSEY_DATA (CI sets it)")
    cut, calls = stacked.segments, []
    monkeypatch.setattr(stacked, "segments", lambda steps, *prices: calls.append(steps) or cut(steps, *prices))
    out = tmp_path / "study.json"
    study.main(["--protocols", "paper", "adam", "--trials", "3", "--steps", "2", "--repeats", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    paper, adam = result["rows"]
    assert (paper["optimizer"], paper["batch_size"], adam["optimizer"], adam["batch_size"]) == ("sgd", 1, "adam", 8)
    for row in (paper, adam):
        assert row["packs"] == plan_packs(row["hidden_sizes"], "auto", "cpu", row["batch_size"]) and row["trials"] == 3
        assert row["steps_timed"] == 2 and row["steps_per_epoch"] == -(-229 // row["batch_size"])
        assert row["one at a time"]["trials_per_hour"] > 0 and row["packed (auto)"]["trials_per_hour"] > 0
        assert row["packed, uncut"]["trials_per_hour"] > 0 and row["speedup_uncut"] > 0
        assert [g["hidden_sizes"] for g in row["per_pack"]] == [[row["hidden_sizes"][k] for k in p] for p in row["packs"]]
        assert abs(sum(g["share_alone"] for g in row["per_pack"]) - 1) < 0.5  # medians of parts: near, not equal to, 1
    assert "| paper (odyssey_jsb) | sgd, 1 | 3 |" in capsys.readouterr().out
    assert calls, "the packs' trials had equal lengths: the time cuts were not timed"


def test_the_study_benchmark_left_the_console_script_with_a_pointer_to_its_new_home(capsys):
    with pytest.raises(SystemExit, match=r"python -m benchmarks\.study --trials 3"):
        bench.main(["--study", "--trials", "3"])


def test_the_cut_benchmark_fits_the_prices_it_times_and_writes_them_to_a_costs_file(tmp_path, capsys):
    copy = tmp_path / "costs.json"
    copy.write_text(json.dumps(costs.load()))
    cuts.main(["--trials", "2", "--hidden", "4", "6", "--steps", "4", "--segments", "2", "--repeats", "1",
               "--write", str(copy)])
    out = capsys.readouterr().out
    assert "| 2 | 4 |" in out and "| 2 | 6 |" in out and "step_shared_us = " in out
    assert stacked.segments.__name__ == "segments"  # the timed cuts are undone
    written = costs.section("cuts", copy)
    assert written["measured"]["command"].startswith("python -m benchmarks.cuts --trials 2")
    assert len(written["trial_step_us"]) == 2 and written["segment_us"] != costs.section("cuts")["segment_us"]
    assert costs.section("plan", copy) == costs.section("plan")  # the other section is left as it was
    rows = [{"hidden": n, "trial_step_us": 3.0 + 0.5 * n * n, "shared_step_us": 7.0, "segment_us": 11.0} for n in (2, 4, 8)]
    prices = cuts.fit(rows)  # an exact line is recovered
    assert prices["step_shared_us"] == 7.0 and prices["segment_us"] == 11.0
    assert all(abs(a - b) < 1e-9 for a, b in zip(prices["trial_step_us"], (3.0, 0.5)))


def test_the_pack_benchmark_refits_the_planners_cost_model():
    def row(kind: str, hidden: int, width: int, ms: float) -> dict:
        return {"kind": kind, "hidden": hidden, "width": width, "trials": width if kind == "pack" else 2,
                "trial_axis": "stacked", "epoch_seconds": ms * 3 / 1e3 * (1 if kind == "pack" else 2)}

    rows = [row("single", n, 1, 40 + 0.001 * n * n) for n in (24, 96, 192)]
    rows += [row("pack", n, k, 30 + k * (5 + 0.002 * n * n)) for n in (24, 96) for k in (2, 8)]
    fitted = packs.fit_costs(rows, steps=3)
    assert fitted["alone_cost_ms"] == pytest.approx([40, 0.001]) and fitted["pack_cost_ms"] == pytest.approx([30, 5, 0.002])
    with pytest.raises(ValueError, match="2 widths"):
        packs.fit_costs([r for r in rows if r["width"] != 8], steps=3)


def test_the_report_benchmark_writes_the_report_both_ways_and_finds_the_same_tables(tmp_path, capsys):
    quick = Path(__file__).resolve().parents[1] / "results" / "published" / "quick" / "adding"
    if not quick.is_dir():
        pytest.skip("the published quick study is not in this checkout")
    study_dir = tmp_path / "quick"  # two of its cells: a report of a few seconds
    for cell in ("vanilla", "cifg"):
        shutil.copytree(quick / cell, study_dir / "adding" / cell)
    out = tmp_path / "report.json"
    report.main([str(study_dir), "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["differ"] == [] and len(result["seconds"]["sequential"]) == len(result["seconds"]["parallel"]) == 1
    assert f"| {study_dir} | {len(list(study_dir.rglob('result.json')))} |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "nothing")])
