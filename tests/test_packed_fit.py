"""A pack of trials trains each trial as `train.run` would: same initial weights, batch order, noise, history,
early stopping, divergence and record (float64, CPU); a killed pack resumes to the uninterrupted result."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TIMING, VARIANTS, assert_close, trial_cfgs, with_keys

from lstm_odyssey import jobstate, train
from lstm_odyssey.config import load_config
from lstm_odyssey.data import build_task
from lstm_odyssey.engine import Engine
from lstm_odyssey.packed import fit as packed_fit
from lstm_odyssey.packed import stacked
from lstm_odyssey.packed.fit import fit_pack, initial_models
from lstm_odyssey.packed.model import PackedModel, template_for
from lstm_odyssey.packed.plan import GPU_WIDTH, alone_cost, auto_width, check_packable, pack_cost, pack_key, plan_packs
from lstm_odyssey.packed.plan import REFERENCE_BATCH as B
from lstm_odyssey.results import read_record

pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/conftest.py


def max_difference(a, b) -> float:
    if isinstance(a, dict):
        return max([max_difference(a[k], b[k]) for k in a if k not in TIMING and k in b] or [0.0])
    if isinstance(a, (list, tuple)):
        return max([max_difference(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b)
    return 0.0


@pytest.mark.parametrize(("cell", "trial_axis"), [("vanilla", "stacked"), ("fgr", "stacked"), ("gru", "stacked"),
                                                 ("gru_cho", "stacked"), ("rnn", "stacked"), ("vanilla", "vmap"), ("fgr", "vmap"),
                                                 ("min_gru", "stacked"), ("slstm", "stacked"), ("indrnn", "stacked")])
def test_a_pack_equals_its_trials_run_alone(tmp_path, cell, trial_axis):
    cfgs = trial_cfgs(f"cell={cell}", "optim=sgd")
    singles = [train.run(cfg, tmp_path / f"single{k}") for k, cfg in enumerate(cfgs)]
    packed = fit_pack([(cfg, tmp_path / f"packed{k}") for k, cfg in enumerate(cfgs)], pack_id="p0", trial_axis=trial_axis)
    assert [r["status"] for r in singles] == ["ok", "ok", "ok", "diverged"]
    assert singles[2]["stopped_by"] == "early_stopping" and singles[2]["epochs_run"] == 2
    assert singles[3]["stopped_by"] == "diverged" and singles[3]["epochs_run"] < 4
    for k, (single, pack) in enumerate(zip(singles, packed)):
        assert set(pack) == set(single) | {"pack"}
        assert pack["pack"] == {"id": "p0", "width": 4, "position": k}
        on_disk = read_record(tmp_path / f"packed{k}")
        assert (on_disk["pack"], on_disk["history"], on_disk["status"]) == (pack["pack"], pack["history"], pack["status"])
        assert pack["backend"] == packed_fit.RECORDED_BACKEND[trial_axis]
        assert_close(pack, single)
        best = torch.load(tmp_path / f"packed{k}" / "checkpoints" / "best.pt", weights_only=True) if k != 3 else None
        if best is not None:  # the best weights in the single model's layout, as a single run writes them
            own = torch.load(tmp_path / f"single{k}" / "checkpoints" / "best.pt", weights_only=False)
            assert best["epoch"] == own["epoch"] and set(best["model"]) == set(own["model"])
            assert max((best["model"][n] - own["model"][n]).abs().max().item() for n in own["model"]) < 1e-9


def test_adam_pack_with_different_betas_equals_single_runs(tmp_path):
    variants = [
        {"optim.lr": 0.01, "optim.betas": [0.9, 0.999], "model.hidden_size": 7, "trainer.seed": 4, "trainer.input_noise": 0.2},
        {"optim.lr": 0.03, "optim.betas": [0.5, 0.99], "model.hidden_size": 3, "trainer.seed": 5, "trainer.clip": 0.1},
        {"optim.lr": 0.003, "optim.weight_decay": 0.01, "model.hidden_size": 5, "trainer.seed": 6},
    ]
    cfgs = trial_cfgs("cell=cifg", "optim=adam", "trainer.epochs=3", variants=variants)
    singles = [train.run(cfg, tmp_path / f"single{k}") for k, cfg in enumerate(cfgs)]
    packed = fit_pack([(cfg, tmp_path / f"packed{k}") for k, cfg in enumerate(cfgs)])
    for single, pack in zip(singles, packed):
        assert single["status"] == "ok"
        assert_close(pack, single)


def test_trials_leaving_the_pack_leave_the_others_bit_unchanged(tmp_path):
    """A diverging and an early-stopping trial leave; the two others end exactly as in a pack without them."""
    cfgs = trial_cfgs("cell=vanilla", "optim=sgd")
    full = fit_pack([(cfg, tmp_path / f"full{k}") for k, cfg in enumerate(cfgs)])
    alone = fit_pack([(cfg, tmp_path / f"two{k}") for k, cfg in enumerate(cfgs[:2])])
    assert [r["stopped_by"] for r in full] == ["epoch_cap", "epoch_cap", "early_stopping", "diverged"]
    for a, b in zip(full[:2], alone):
        assert a["history"] == b["history"] and a["test"] == b["test"]


def test_initial_weights_are_those_of_the_single_run(tmp_path):
    cfgs = trial_cfgs("cell=fgr", "optim=sgd")
    task, models = initial_models(cfgs)
    pack = PackedModel(template_for(cfgs[0], task, 9), models)
    for k, cfg in enumerate(cfgs):
        torch.manual_seed(cfg["trainer"]["seed"])
        own = train.build_model(cfg, build_task(**cfg["data"]))
        weights = pack.trial_state_dict(k)
        assert all(torch.equal(weights[n], p) for n, p in own.state_dict().items())


def test_a_killed_pack_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    variants = VARIANTS[:3]  # trial 2 leaves (early stopping) before the kill
    cfgs = trial_cfgs("cell=gru", "optim=adam", "trainer.deterministic=true", "trainer.resume=true", variants=variants)
    straight = fit_pack([(cfg, tmp_path / f"straight{k}") for k, cfg in enumerate(cfgs)])

    real_epoch = Engine.train_epoch
    calls = {"n": 0}

    def killed(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the job were killed during epoch 3
        return real_epoch(self)

    monkeypatch.setattr(Engine, "train_epoch", killed)
    trials = [(cfg, tmp_path / f"resumed{k}") for k, cfg in enumerate(cfgs)]
    with pytest.raises(KeyboardInterrupt):
        fit_pack(trials)
    assert read_record(tmp_path / "resumed2")["stopped_by"] == "early_stopping"
    assert not (tmp_path / "resumed0" / "result.json").exists()
    ckpt = torch.load(tmp_path / "resumed0" / "checkpoints" / jobstate.PACK_CHECKPOINT, weights_only=True)
    # the checkpoint of epoch 2 holds trial 2, which stopped then (a larger trainer.epochs could continue it);
    # the resume below keeps its record
    assert ckpt["active"] == [0, 1, 2] and [loop["epoch"] for loop in ckpt["loops"]] == [2, 2, 2]
    assert all(p.shape[0] == 3 for p in ckpt["model"].values())
    monkeypatch.setattr(Engine, "train_epoch", real_epoch)
    resumed = fit_pack(trials)
    for a, b in zip(straight, resumed):
        assert a["history"] == b["history"] and (a["objective"], a["test"]) == (b["objective"], b["test"])
        assert (a["status"], a["stopped_by"], a["epochs_run"]) == (b["status"], b["stopped_by"], b["epochs_run"])
    for k in range(3):
        w_a = torch.load(tmp_path / f"straight{k}" / "checkpoints" / "best.pt", weights_only=True)["model"]
        w_b = torch.load(tmp_path / f"resumed{k}" / "checkpoints" / "best.pt", weights_only=True)["model"]
        assert all(torch.equal(w_a[n], w_b[n]) for n in w_a)


def test_trials_that_cannot_share_a_pack_are_refused_with_the_key():
    cfgs = trial_cfgs("cell=gru", variants=VARIANTS[:2])
    assert pack_key(cfgs[0]) == pack_key(cfgs[1])
    other = with_keys(cfgs[1], {"trainer.batch_size": 8})
    assert pack_key(other) != pack_key(cfgs[0])
    with pytest.raises(ValueError, match="must share trainer.batch_size"):
        check_packable([cfgs[0], other])
    with pytest.raises(ValueError, match=r"must share cell\."):
        check_packable([cfgs[0], trial_cfgs("cell=rnn", variants=VARIANTS[:1])[0]])


def test_an_exception_records_every_trial_as_failed(tmp_path):
    cfgs = trial_cfgs("data.form=weird", variants=VARIANTS[:2])
    with pytest.raises(ValueError, match="adding form"):
        fit_pack([(cfg, tmp_path / f"t{k}") for k, cfg in enumerate(cfgs)])
    for k in range(2):
        record = read_record(Path(tmp_path / f"t{k}"))
        assert record["status"] == "failed" and "adding form" in record["error"] and record["pack"]["position"] == k


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CI has no GPU)")
def test_a_pack_on_the_gpu_equals_the_pack_on_the_cpu(tmp_path):
    cfgs = trial_cfgs("cell=vanilla", "optim=adam", "trainer.epochs=2", variants=VARIANTS[:3])
    on_cpu = fit_pack([(with_keys(c, {"trainer.device": "cpu"}), tmp_path / f"cpu{k}") for k, c in enumerate(cfgs)])
    on_gpu = fit_pack([(with_keys(c, {"trainer.device": "cuda"}), tmp_path / f"gpu{k}") for k, c in enumerate(cfgs)])
    for a, b in zip(on_cpu, on_gpu):
        assert b["device"].startswith("cuda")
        a, b = ({k: v for k, v in r.items() if k not in ("device", "config", "hparams")} for r in (a, b))
        assert_close(a, b)


def test_plan_packs_sorts_by_size_and_follows_the_width_rule():
    sizes = [250, 20, 64, 30, 300, 25, 96, 97]  # 250 and 300: beyond the sizes where packing pays most
    assert plan_packs(sizes, 3, "cpu", B) == [[1, 5, 3], [2, 6, 7], [0, 4]]
    packs = plan_packs(sizes, "auto", "cpu", B)
    assert sorted(k for p in packs for k in p) == list(range(len(sizes)))
    for pack in packs:
        largest = max(sizes[k] for k in pack)
        assert len(pack) <= auto_width(largest, "cpu", B)
        assert [sizes[k] for k in pack] == sorted(sizes[k] for k in pack)
    assert [1, 5, 3] in packs and [2, 6, 7] in packs and [0] in packs and [4] in packs  # small ones together, large ones alone
    # one pack of the six would pad 20 units to 97: the model prices the two packs lower
    assert pack_cost(3, 30, B) + pack_cost(3, 97, B) < pack_cost(6, 97, B)
    many = plan_packs([20] * 40, "auto", "cpu", B)
    assert [len(p) for p in many] == [32, 8]  # the widest measured pack, then the rest
    assert plan_packs([20] * 40, "auto", "cuda", B) == plan_packs([20] * 40, GPU_WIDTH, "cpu", B)
    with pytest.raises(ValueError, match="positive integer"):
        plan_packs(sizes, 0, "cpu", B)


def _cuts(n: int):
    """Every way of cutting n sorted items into runs: lists of run lengths."""
    if n == 0:
        yield []
        return
    for first in range(1, n + 1):
        for rest in _cuts(n - first):
            yield [first, *rest]


@pytest.mark.parametrize("batch_size", [1, 8, 16])
def test_auto_plan_is_the_cheapest_cut_under_its_cost_model(batch_size):
    """The dynamic programme against brute force over every cut of the sorted sizes (2^(n-1) of them)."""
    rng = np.random.default_rng(batch_size)
    for _ in range(5):
        sizes = [int(v) for v in np.exp(rng.uniform(np.log(20), np.log(260), 9)).round()]
        order = sorted(range(len(sizes)), key=lambda k: (sizes[k], k))
        ranked = [sizes[k] for k in order]

        def price(cut, ranked=ranked):
            total, start = 0.0, 0
            for length in cut:
                largest = ranked[start + length - 1]
                if length > auto_width(largest, "cpu", batch_size):
                    return float("inf")
                total, start = total + pack_cost(length, largest, batch_size), start + length
            return total

        best = min(price(c) for c in _cuts(len(sizes)))
        plan = plan_packs(sizes, "auto", "cpu", batch_size)
        assert sum(pack_cost(len(p), max(sizes[k] for k in p), batch_size) for p in plan) == pytest.approx(best)
        assert best <= sum(alone_cost(n, batch_size) for n in sizes) + 1e-9  # never worse than every trial alone


def test_cost_model_gives_the_measured_pack_ratios():
    """The model's ratio K alone / pack against the measured table in packed/plan.py's docstring (within the
    spread of those runs, which moved by 10-20 %)."""
    measured = {(24, 8): (3.5, 3.7), (24, 16): (4.2, 4.9), (48, 8): (2.6, 3.2), (96, 8): (2.4, 2.5),
                (128, 8): (1.6, 1.9), (192, 8): (1.2, 1.5), (256, 8): (1.0, 1.0), (384, 8): (0.9, 0.9)}
    for (n, k), (low, high) in measured.items():
        ratio = k * alone_cost(n, B) / pack_cost(k, n, B)
        assert low * 0.85 <= ratio <= high * 1.15, (n, k, ratio)
    sizes = [47, 52, 256, 212, 84, 35, 199, 141, 34, 41]  # the modern study's first 10 trials
    plan = [[sizes[k] for k in p] for p in plan_packs(sizes, "auto", "cpu", 16)]
    assert plan == [[34, 35, 41, 47, 52], [84], [141], [199], [212], [256]]


@pytest.mark.parametrize("cuts", ["priced", "free"])
def test_variable_lengths_a_pack_of_temporal_order_trials_equals_single_runs(tmp_path, cuts, monkeypatch):
    """Sequences of 100-110 steps: each trial's batches have their own padded length inside the pack, and
    the pack cuts its sweep where they end (`free`: at every length). The task's data are float32 whatever
    the default dtype, so this one runs in float32 (to 1e-4)."""
    torch.set_default_dtype(torch.float32)  # the fixture restores the default afterwards
    if cuts == "free":
        monkeypatch.setattr(stacked, "cut_prices", lambda hidden, batch: (0.0, 0.0))
    overrides = ["data=temporal_order", "data.n_train=32", "data.n_val=16", "data.n_test=16", "trainer.batch_size=8",
                 "trainer.epochs=2", "trainer.patience=null", "trainer.progress=false", "cell=cifg", "optim=adam"]
    base = load_config(overrides)
    cfgs = [with_keys(base, {"model.hidden_size": h, "trainer.seed": s, "optim.lr": lr})
            for h, s, lr in ((4, 0, 0.01), (6, 1, 0.03))]
    singles = [train.run(cfg, tmp_path / f"single{k}") for k, cfg in enumerate(cfgs)]
    packed = fit_pack([(cfg, tmp_path / f"packed{k}") for k, cfg in enumerate(cfgs)])
    for single, pack in zip(singles, packed):
        assert single["status"] == "ok"
        assert_close(pack, single, tol=1e-4)


def test_a_pack_of_jsb_trials_with_time_cuts_equals_single_runs(tmp_path, monkeypatch):
    """The reproduction's own task, per-step and unmasked: each trial's batches have their own length, and
    with a cut at every length each trial's sweep stops where its batch does, as its single run."""
    data = os.environ.get("LSTM_ODYSSEY_DATA")
    if not data or not (Path(data) / "jsb_chorales").is_dir():
        pytest.skip("needs the JSB Chorales copy under $LSTM_ODYSSEY_DATA (CI sets it)")
    torch.set_default_dtype(torch.float32)  # the chorales are float32; the fixture restores the default
    monkeypatch.setattr(stacked, "cut_prices", lambda hidden, batch: (0.0, 0.0))
    seen = []
    cut = stacked.segments
    monkeypatch.setattr(stacked, "segments", lambda steps, *prices: seen.append(cut(steps, *prices)) or seen[-1])
    base = load_config(["data=jsb_chorales", "data.max_chorales=24", "trainer.batch_size=4", "trainer.epochs=2",
                        "trainer.patience=null", "trainer.progress=false", "cell=vanilla", "optim=adam"])
    cfgs = [with_keys(base, {"model.hidden_size": h, "trainer.seed": s, "optim.lr": lr, "trainer.input_noise": noise})
            for h, s, lr, noise in ((5, 0, 0.01, 0.0), (8, 1, 0.03, 0.2), (3, 2, 0.02, 0.1))]
    singles = [train.run(cfg, tmp_path / f"single{k}") for k, cfg in enumerate(cfgs)]
    packed = fit_pack([(cfg, tmp_path / f"packed{k}") for k, cfg in enumerate(cfgs)])
    assert any(len(cuts) > 1 for cuts in seen), "no batch of the pack was cut"
    for single, pack in zip(singles, packed):
        assert single["status"] == "ok"
        assert_close(pack, single, tol=1e-4)
