"""One loop for a run and a pack (engine.py): a pack of one is a single run, and each trial of a pack is
charged its own share of the pack's time, so a time cap stops it where its own run would stop."""

from __future__ import annotations

import pytest
from helpers import TIMING, VARIANTS, assert_close, trial_cfgs, with_keys

from lstm_odyssey import engine, train
from lstm_odyssey.packed.fit import PackRunner, fit_pack

pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/conftest.py


def test_a_pack_of_one_gives_the_record_of_the_single_run(tmp_path):
    (cfg,) = trial_cfgs("cell=vanilla", "optim=adam", variants=VARIANTS[1:2])
    single = train.run(cfg, tmp_path / "single")
    (packed,) = fit_pack([(cfg, tmp_path / "packed")], pack_id="one")
    assert packed["pack"] == {"id": "one", "width": 1, "position": 0}
    assert packed["backend"] == single["backend"]
    timing = TIMING | {"run_dir", "git_commit"}
    assert {k: v for k, v in packed.items() if k not in timing} == {k: v for k, v in single.items() if k not in timing}
    assert [e["epoch"] for e in packed["history"]] == [1, 2, 3, 4]


class FakeClock:
    """A clock that only the training steps move: `per_trial` seconds for each trial a step trains, as if the
    trials of a pack ran one after another."""

    def __init__(self, per_trial: float) -> None:
        self.now, self.per_trial = 0.0, per_trial

    def __call__(self) -> float:
        return self.now

    def charge(self, trials: int) -> None:
        self.now += self.per_trial * trials


@pytest.fixture
def fake_clock(monkeypatch):
    fake = FakeClock(per_trial=1.5)
    monkeypatch.setattr(engine, "clock", fake)
    for runner in (train.SingleRunner, PackRunner):
        real = runner.forward_backward

        def timed(self, xs, batches, state, real=real):
            fake.charge(len(xs))
            return real(self, xs, batches, state)

        monkeypatch.setattr(runner, "forward_backward", timed)
    return fake


def test_with_a_time_cap_each_trial_of_a_pack_stops_where_its_own_run_stops(tmp_path, fake_clock):
    # four batches an epoch at 1.5 s each: 6 s an epoch; caps of 0.25, 0.4, 0.2 and 0.35 minutes stop the runs
    # after 3, 4, 2 and 4 epochs (of 6), so the pack's width shrinks from 4 to 1 on the way
    caps = [0.25, 0.4, 0.2, 0.35]
    variants = [{**v, "trainer.max_minutes": cap, "trainer.epochs": 6, "trainer.patience": None}
                for v, cap in zip(VARIANTS, caps)]
    variants[3]["optim.lr"] = 0.3  # trial 3 trains on instead of diverging
    cfgs = trial_cfgs("cell=gru", "optim=sgd", variants=variants)
    singles = [train.run(cfg, tmp_path / f"single{k}") for k, cfg in enumerate(cfgs)]
    assert [r["stopped_by"] for r in singles] == ["time_cap"] * 4
    assert [r["epochs_run"] for r in singles] == [3, 4, 2, 4]
    packed = fit_pack([(cfg, tmp_path / f"packed{k}") for k, cfg in enumerate(cfgs)])
    for single, pack in zip(singles, packed):
        assert (pack["stopped_by"], pack["epochs_run"]) == (single["stopped_by"], single["epochs_run"])
        assert_close(pack, single)
        assert pack["trial_seconds"] == single["trial_seconds"] == 6.0 * single["epochs_run"]


def test_a_trial_is_charged_only_while_it_trains(tmp_path, fake_clock):
    """Once the early stopper (trial 2, epoch 2) has left, the two others share steps that cost 2 x 1.5 s."""
    variants = [{**v, "trainer.epochs": 4} for v in VARIANTS[:3]]
    cfgs = trial_cfgs("cell=vanilla", "optim=sgd", variants=variants)
    records = fit_pack([(cfg, tmp_path / f"t{k}") for k, cfg in enumerate(cfgs)])
    assert [r["epochs_run"] for r in records] == [4, 4, 2]
    steps = 4  # batches an epoch
    assert [r["trial_seconds"] for r in records] == [1.5 * steps * 4, 1.5 * steps * 4, 1.5 * steps * 2]
    pack_seconds = 1.5 * steps * (3 * 2 + 2 * 2)  # two epochs of three trials, two of two
    assert [r["wall_seconds"] for r in records] == [pack_seconds, pack_seconds, 1.5 * steps * 3 * 2]


def test_a_run_ended_by_its_epoch_cap_goes_on_when_resumed_with_more_epochs(tmp_path):
    (cfg,) = trial_cfgs("cell=gru", "optim=adam", variants=VARIANTS[:1])
    cfg = with_keys(cfg, {"trainer.epochs": 2, "trainer.resume": True})
    cfgs = [cfg, with_keys(cfg, {"trainer.seed": 9})]
    first = fit_pack([(c, tmp_path / f"t{k}") for k, c in enumerate(cfgs)])
    assert [r["epochs_run"] for r in first] == [2, 2]
    again = fit_pack([(c, tmp_path / f"t{k}") for k, c in enumerate(cfgs)])
    assert [r["history"] for r in again] == [r["history"] for r in first]  # stopped: their records stay
    longer = [with_keys(c, {"trainer.epochs": 4}) for c in cfgs]
    extended = fit_pack([(c, tmp_path / f"t{k}") for k, c in enumerate(longer)])
    straight = fit_pack([(with_keys(c, {"trainer.resume": False}), tmp_path / f"s{k}") for k, c in enumerate(longer)])
    for a, b in zip(extended, straight):
        assert a["resumed_from_epoch"] == 2 and a["epochs_run"] == 4
        assert a["history"] == b["history"]


def legacy_layout(ckpt: dict, pack: bool) -> dict:
    """A checkpoint in an earlier release's layout: a pack's `params` and no hyperparameters; a run's one
    `loop` and `generator`."""
    if pack:
        return {"run_dirs": ckpt["run_dirs"], "active": ckpt["active"], "params": ckpt["model"],
                "optimizer": ckpt["optimizer"], "generators": ckpt["generators"], "loops": ckpt["loops"],
                "elapsed": ckpt["elapsed"], "torch_rng": ckpt["torch_rng"], "cuda_rng": None}
    return {"model": ckpt["model"], "optimizer": ckpt["optimizer"], "generator": ckpt["generators"][0],
            "torch_rng": ckpt["torch_rng"], "cuda_rng": None, "loop": ckpt["loops"][0], "hparams": ckpt["hparams"][0]}


@pytest.mark.parametrize("width", [1, 2])
def test_a_checkpoint_of_an_earlier_release_resumes_to_the_uninterrupted_result(tmp_path, width):
    import torch

    from lstm_odyssey import checkpoints, jobstate

    cfgs = [with_keys(c, {"trainer.resume": True}) for c in trial_cfgs("cell=gru", "optim=adam", variants=VARIANTS[:width])]
    short = [with_keys(c, {"trainer.epochs": 2}) for c in cfgs]
    fit_pack([(c, tmp_path / f"t{k}") for k, c in enumerate(short)])
    path = tmp_path / "t0" / "checkpoints" / (jobstate.PACK_CHECKPOINT if width > 1 else "last.pt")
    if width == 1:  # a pack of one is a single run; as an earlier release's single run it kept last.pt
        (tmp_path / "t0" / "checkpoints" / jobstate.PACK_CHECKPOINT).rename(path)
    old = legacy_layout(torch.load(path, weights_only=True), pack=width > 1)
    checkpoints.save(old, path)
    assert set(checkpoints.load_checkpoint(path, torch.device("cpu"))) >= {"model", "loops", "hparams", "active"}
    resumed = (fit_pack([(c, tmp_path / f"t{k}") for k, c in enumerate(cfgs)]) if width > 1
               else [train.run(cfgs[0], tmp_path / "t0")])
    straight = fit_pack([(with_keys(c, {"trainer.resume": False}), tmp_path / f"s{k}") for k, c in enumerate(cfgs)])
    for a, b in zip(resumed, straight):
        assert a["resumed_from_epoch"] == 2 and a["history"] == b["history"]
