"""`fanova.main_effects` gives optuna's `FanovaImportanceEvaluator` numbers (optuna is the reference here only)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from lstm_odyssey.analysis import hyperparams
from lstm_odyssey.analysis.fanova import main_effects

RTOL, ATOL = 1e-9, 1e-12


def optuna_main_effects(X, y, low, high, n_trees=64, max_depth=8, seed=0, n_choices=None) -> np.ndarray:
    """optuna's evaluator on the same data: columns named so that optuna's name order is the column order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution
        from optuna.importance import FanovaImportanceEvaluator

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        n_choices = n_choices or [0] * X.shape[1]
        names = [f"p{j:02d}" for j in range(X.shape[1])]
        dists = {n: CategoricalDistribution([str(c) for c in range(k)]) if k else FloatDistribution(lo, hi)
                 for n, k, lo, hi in zip(names, n_choices, low, high)}
        study = optuna.create_study()
        study.add_trials([
            optuna.trial.create_trial(
                params={n: str(int(x)) if k else float(x) for n, k, x in zip(names, n_choices, row)},
                distributions=dists, value=float(v))
            for row, v in zip(X, y)
        ])
        evaluator = FanovaImportanceEvaluator(n_trees=n_trees, max_depth=max_depth, seed=seed)
        out = optuna.importance.get_param_importances(study, evaluator=evaluator, params=names, normalize=False)
    return np.array([out[n] for n in names])


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x0 matters a lot, x1 × x2 interact, x3 spans a range of 1e-5 (a few float32 steps), x4 does nothing."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 2, size=(n, 5))
    X[:, 3] = 1.0 + 1e-5 * rng.uniform(size=n)
    y = 3 * X[:, 0] ** 2 + 2 * X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=n)
    return X, y, X.min(axis=0), X.max(axis=0)


@pytest.mark.parametrize(("n", "seed", "n_trees", "max_depth"), [
    (20, 0, 64, 8), (50, 1, 64, 8), (50, 2, 16, 8), (120, 3, 16, 3), (8, 4, 16, 64),
])
def test_main_effects_equal_optuna(n, seed, n_trees, max_depth):
    X, y, low, high = planted(n, seed)
    ours = main_effects(X, y, low, high, n_trees=n_trees, max_depth=max_depth, seed=seed)
    ref = optuna_main_effects(X, y, low, high, n_trees=n_trees, max_depth=max_depth, seed=seed)
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)
    assert ours[0] > 0.3  # the planted strong effect shows


def test_categorical_and_constant_columns_equal_optuna():
    rng = np.random.default_rng(7)
    n = 40
    X = np.column_stack([rng.uniform(size=n), np.full(n, 0.5), rng.integers(0, 4, n), np.zeros(n)])
    y = X[:, 0] + (X[:, 2] == 1) + 0.5 * (X[:, 2] == 3) * X[:, 0] + 0.05 * rng.normal(size=n)
    # a constant column on a 1e-12 box (as hyperparams passes it), a 5-choice categorical that never takes its
    # last choice, a one-choice categorical (optuna leaves it out: 0)
    low, high, n_choices = [0.0, 0.5, 0, 0], [1.0, 0.5 + 1e-12, 1, 1], [0, 0, 5, 1]
    X[:, 0] = np.clip(X[:, 0], 0, 1)
    ours = main_effects(X, y, low, high, n_trees=16, seed=3, n_choices=n_choices)
    ref = optuna_main_effects(X, y, low, high, n_trees=16, seed=3, n_choices=n_choices)
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)
    assert ours[1] == 0 and ours[3] == 0 and ours[2] > 0.2


def test_degenerate_inputs_behave_as_optuna():
    X, y, low, high = planted(10, 0)
    with pytest.raises(ValueError):
        main_effects(X, y, low, high, n_choices=[0, 0, 0, 0, 3])  # not codes of a categorical
    assert (main_effects(X[:1], y[:1], low, high) == 0).all()  # one trial: nothing to assess
    with pytest.raises(RuntimeError, match="zero total variance"):  # every tree a single leaf
        main_effects(X, np.ones(len(y)), low, high, n_trees=4)
    y = y.copy()
    y[3] = np.inf  # optuna drops trials whose value is not finite
    np.testing.assert_allclose(main_effects(X, y, low, high, n_trees=8),
                               main_effects(np.delete(X, 3, axis=0), np.delete(y, 3), low, high, n_trees=8))


def test_trees_whose_leaves_agree_are_skipped():
    """A bootstrap sample with one distinct y gives a tree (split on rounding noise) whose variance is a
    rounding error: optuna sometimes keeps it (one rounding error over another), main_effects skips it. The
    rest is optuna's, tree by tree (optuna's private `_Fanova` is the reference)."""
    from optuna.importance._fanova._fanova import _Fanova

    checked = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        X = rng.uniform(size=(5, 2))
        y = np.where(rng.uniform(size=5) < 0.5, *(rng.normal(size=2) * 10 ** rng.uniform(-3, 3, 2)))
        if len(set(y)) < 2:
            continue
        low, high = X.min(axis=0), X.max(axis=0)
        fanova = _Fanova(n_trees=64, max_depth=8, min_samples_split=2, min_samples_leaf=1, seed=seed)
        fanova.fit(X, y, np.column_stack([low, high]), [np.array([0]), np.array([1])])
        fractions = []
        for estimator, tree in zip(fanova._forest.estimators_, fanova._trees):
            leaves = estimator.tree_.value[estimator.tree_.feature < 0, 0, 0]
            if np.ptp(leaves) > 1e-9 * np.abs(leaves).max():
                fractions.append([max(tree.get_marginal_variance(np.array([j])), 0) / tree.variance for j in (0, 1)])
        np.testing.assert_allclose(main_effects(X, y, low, high, seed=seed), np.mean(fractions, axis=0),
                                   rtol=RTOL, atol=ATOL)
        checked += 1
    assert checked >= 8


def test_constant_target_raises_where_optuna_returns_noise():
    X = np.random.default_rng(0).uniform(size=(30, 3))
    y = np.full(30, 2.302585092994046)  # log 10, a chance-level NLL on ten classes: optuna 5.1 returns
    # [0.12, 0.19, 2.25] here (the trees split on rounding noise), not a share of anything
    with pytest.raises(RuntimeError, match="zero total variance"):
        main_effects(X, y, X.min(axis=0), X.max(axis=0), n_trees=16)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_irrelevant_feature_gets_nothing_and_fractions_sum_below_one(seed):
    X, y, low, high = planted(200, seed)
    effects = main_effects(X, y, low, high, n_trees=16, seed=seed)
    assert (effects >= 0).all() and effects.sum() <= 1 + 1e-12
    assert effects[4] < 0.02 and effects[0] > 0.5
    assert effects[0] > 10 * effects[4]


def search(n: int, seed: int) -> pd.DataFrame:
    """Two cells of a random search where the learning rate matters and `nfg` adds a constant."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in ("vanilla", "nfg"):
        for i in range(n):
            hp = {"optim.lr": 10 ** rng.uniform(-6, -2), "model.hidden_size": int(10 ** rng.uniform(1.3, 2.3)),
                  "trainer.input_noise": rng.uniform(0, 1), "trainer.seed": i}
            y = (np.log10(hp["optim.lr"]) + 3.5) ** 2 / 6 + 0.3 * (cell == "nfg") + 0.05 * rng.normal()
            rows.append({"status": "ok", "cell": cell, "task": "toy", "metric": "nll", "val_nll": y, "test_nll": y,
                         **hp})
    df = pd.DataFrame(rows)
    df.loc[3, "trainer.input_noise"] = np.nan  # a trial without a value is left out of the forest
    return df


def optuna_fanova(g: pd.DataFrame, names: list[str], score: str, n_trees: int, seed: int) -> dict[str, float]:
    """What `hyperparams._fanova` computed before `fanova.main_effects`: trials handed to optuna."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution
        from optuna.importance import FanovaImportanceEvaluator

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        columns, dists = {}, {}
        for name in names:
            scale = "categorical" if name == "cell" else hyperparams.scale_of(name, g[name])
            values = hyperparams.transform(g[name], scale)
            if scale == "categorical":
                dists[name] = CategoricalDistribution(sorted(values.unique()))
            else:
                low, high = float(values.min()), float(values.max())
                dists[name] = FloatDistribution(low, high if high > low else low + 1e-12)
            columns[name] = values.to_numpy()
        trials = []
        for i in range(len(g)):
            params = {n: str(columns[n][i]) if isinstance(dists[n], CategoricalDistribution) else float(columns[n][i])
                      for n in names}
            if any(isinstance(v, float) and not math.isfinite(v) for v in params.values()):
                continue
            trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(g[score].iloc[i])))
        study = optuna.create_study()
        study.add_trials(trials)
        evaluator = FanovaImportanceEvaluator(n_trees=n_trees, max_depth=8, seed=seed)
        return optuna.importance.get_param_importances(study, evaluator=evaluator, params=names, normalize=False)


def test_importance_equals_optuna_per_cell_and_pooled():
    df = search(30, seed=11)
    imp = hyperparams.importance(df, n_trees=16, seed=5)
    prepared = hyperparams.prepare(df)
    names = hyperparams.hyperparameters(prepared)
    assert set(imp["cell"]) == {"vanilla", "nfg", hyperparams.POOLED}
    for cell, rows in imp.groupby("cell"):
        g = prepared[prepared["ok"]] if cell == hyperparams.POOLED else prepared[prepared["cell"] == cell]
        use = names + (["cell"] if cell == hyperparams.POOLED else [])
        ref = optuna_fanova(g, use, hyperparams.TEST, n_trees=16, seed=5)
        ours = hyperparams._fanova(g, use, hyperparams.TEST, 16, 8, 5)
        assert list(ours) == list(ref)  # same order too: largest first
        np.testing.assert_allclose([ours[n] for n in use], [ref[n] for n in use], rtol=RTOL, atol=ATOL)
        got = rows.set_index("param")["variance_fraction"]
        np.testing.assert_allclose([got[n] for n in use], [ref[n] for n in use], rtol=RTOL, atol=ATOL)
    pooled = imp[imp["cell"] == hyperparams.POOLED].set_index("param")
    assert pooled["importance"].idxmax() == "optim.lr" and pooled.loc["cell", "variance_fraction"] > 0
