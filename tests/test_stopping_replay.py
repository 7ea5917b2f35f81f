"""analysis.stopping: recorded histories replayed under a stricter stopping rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from lstm_odyssey.analysis.stopping import main, replay, what_if
from lstm_odyssey.results import find_records, read_record

ADAM = Path(__file__).resolve().parents[1] / "results" / "odyssey_jsb" / "adam"


def record(vals, min_improvement=0.0, patience=3, epochs=100, stopped_by="epoch_cap"):
    history = [{"epoch": e, "train_loss": v, "val_nll": v} for e, v in enumerate(vals, 1)]
    trainer = {"min_improvement": min_improvement, "patience": patience, "epochs": epochs, "max_minutes": None}
    return {"status": "ok", "metric": "nll", "config": {"trainer": trainer}, "history": history,
            "stopped_by": stopped_by, "epochs_run": len(vals), "objective": min(vals)}


def test_a_stricter_plateau_threshold_stops_where_the_hand_computed_rule_says():
    # best after each epoch: 10, 9, 8.5, 8.45, 8.44, 8.43; over 3 epochs the gain falls to 8.5 - 8.43 = 0.07,
    # below 1 % of 8.5 (0.085) first at epoch 6; at 0.5 % it is 0.07 >= 0.0425 there, then 8.45 - 8.42 = 0.03
    # < 0.04225 at epoch 7
    r = record([10, 9, 8.5, 8.45, 8.44, 8.43, 8.42, 8.41], epochs=8)
    assert replay(r) == ("epoch_cap", 8, 8.41)
    assert replay(r, min_improvement=0.01) == ("plateau", 6, 8.43)
    assert replay(r, min_improvement=0.005) == ("plateau", 7, 8.42)
    assert replay(r, epochs=5) == ("epoch_cap", 5, 8.44)
    assert replay(record([5, 6, 7, 8, 4]), patience=2) == ("early_stopping", 3, 5)


def test_a_looser_rule_is_refused_since_its_epochs_were_never_run():
    r = record([3, 2, 1], min_improvement=0.01, epochs=3)
    for rule in ({"min_improvement": 0.001}, {"epochs": 10}, {"patience": 5}, {"epochs": None}):
        with pytest.raises(ValueError, match="looser"):
            replay(r, **rule)
    with pytest.raises(ValueError, match="only"):
        replay(r, lr=1.0)


@pytest.mark.skipif(not ADAM.is_dir(), reason="the committed Adam study is not in this checkout")
def test_the_replay_of_each_committed_run_under_its_own_rule_is_how_the_trainer_stopped_it():
    """The records were written by packs training for real: the replay of their own rule must agree on every
    run, and a stricter threshold may only move runs from the cap to the plateau, earlier."""
    records = [read_record(p) for p in find_records(ADAM)]
    assert len(records) >= 100
    for r in records:
        assert replay(r) == (r["stopped_by"], r["epochs_run"], pytest.approx(r["objective"]))
    table = what_if(records, [0.001, 0.002, 0.005])
    assert table["capped"].is_monotonic_decreasing and table["epochs"].is_monotonic_decreasing
    assert table["worse_max"].iloc[0] == 0 and (table["worse_max"] >= 0).all()


def test_a_grid_of_rules_and_learning_rate_floors_gives_a_row_each_replayed_by_hand():
    """Two runs, the slow one at a small learning rate: each row replays the rule on the runs the floor keeps."""
    fast = {**record([10, 9, 8.5, 8.45, 8.44, 8.43, 8.42, 8.41], epochs=8), "hparams": {"optim.lr": 1e-2}}
    slow = {**record([12, 11.5, 11, 10.5, 10, 9.5, 9, 8.9], epochs=8), "hparams": {"optim.lr": 1e-4}}
    table = what_if([fast, slow], [0.01], [3], [8, 5], [None, 1e-3])
    assert list(table.columns[:5]) == ["lr_min", "min_improvement", "patience", "cap", "runs"]
    assert table["runs"].tolist() == [2, 2, 1, 1]
    # every run, cap 8: fast plateaus at epoch 6 (see above), slow never gains < 1 % over 3 epochs: capped at 8
    assert table.iloc[0][["capped", "plateau", "epochs", "best_val"]].tolist() == [0.5, 0.5, 6 + 8, 8.43]
    assert table.iloc[1][["capped", "epochs"]].tolist() == [1.0, 5 + 5]  # cap 5: both capped
    assert table.iloc[2][["capped", "plateau", "epochs"]].tolist() == [0.0, 1.0, 6]  # lr >= 1e-3: the fast run only
    assert table.iloc[0]["worse_max"] == pytest.approx(8.43 - 8.41)
    with pytest.raises(ValueError, match="no ok run has a learning rate of at least 1"):
        what_if([fast, slow], [0.01], lr_floors=[1.0])


def test_the_command_prints_a_table_and_refuses_a_missing_study(tmp_path, capsys):
    import json

    run = tmp_path / "study" / "task" / "cell" / "000"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps(record([10, 9, 8.5, 8.45, 8.44, 8.43, 8.42, 8.41], epochs=8)))
    assert main([str(tmp_path / "study"), "--min-improvement", "0.0", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "| min_improvement |" in out and out.count("\n") == 4
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), "--min-improvement", "0.01"])
