"""fANOVA main effects with optuna's numbers, in vectorised numpy.

optuna's `FanovaImportanceEvaluator` fits an sklearn random forest and, per tree, walks the tree once per
split interval of a parameter in pure Python: 0.2 to 3 s per call, too slow for a bootstrap over trials.
This module fits the same forest (same arguments, same seed, same column order) and computes the same
per-tree quantities from the leaf boxes at once:

* a leaf is an axis-aligned box of the search space; its weight is its volume;
* the tree's variance is the volume-weighted variance of its leaf values;
* the marginal of parameter j is piecewise constant between the tree's split points on j: on each interval
  it is the average of the leaves whose box covers the interval, weighted by their volume outside j;
* the main effect of j is the variance of that marginal (intervals weighted by length) over the tree's
  variance, averaged over the trees whose variance is not zero.

All trees are handled at once (their nodes concatenated), so the cost is the forest's fit. The numbers are
optuna's (to rounding) except where optuna's are rounding noise: a tree whose leaves all hold the same value
(a bootstrap sample with one distinct y) has zero variance here and is skipped, optuna sometimes keeps it.

A categorical parameter is one-hot encoded as optuna does (one column per choice, bounds [0, 1]); its
marginal runs over the grid of its columns' split intervals, the grid cells that are not one-hot included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def main_effects(
    X: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray, n_trees: int = 64, max_depth: int = 8,
    seed: int | None = 0, n_choices: Sequence[int] | None = None,
) -> np.ndarray:
    """The share of the forest's variance that each column of X explains alone: what optuna's
    `FanovaImportanceEvaluator(n_trees, max_depth, seed)` returns with `normalize=False`, parameters named in
    the column order. Numeric columns are on their analysis scale with bounds `low`, `high` (the search space
    box the marginals average over). Where `n_choices[j] > 0`, column j holds the codes 0..n_choices[j]-1 of
    a categorical parameter (its `low`, `high` are ignored). A numeric column with `low == high` and a
    categorical with one choice are not searched: 0, as in optuna. Rows whose y is not finite are dropped.
    Raises RuntimeError where every tree has zero variance (optuna does too, unless rounding hides it)."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    n_params = X.shape[1]
    kinds = np.zeros(n_params, dtype=int) if n_choices is None else np.asarray(n_choices, dtype=int)
    searched = [j for j in range(n_params) if (kinds[j] > 1 if kinds[j] > 0 else low[j] != high[j])]
    out = np.zeros(n_params)
    finite = np.isfinite(y)
    X, y = X[finite], y[finite]
    if not np.isfinite(X).all() or any(k and not np.isin(X[:, j], np.arange(k)).all() for j, k in enumerate(kinds)):
        raise ValueError("X must be finite, a categorical column codes 0..n_choices-1")
    if not searched or len(y) <= 1:
        return out
    columns, bounds, groups = [], [], []
    for j in searched:
        if kinds[j] > 0:  # one-hot, one column per choice, as optuna's _SearchSpaceTransform
            codes = X[:, j].astype(int)
            first = len(columns)
            columns += [(codes == c).astype(np.float64) for c in range(kinds[j])]
            bounds += [(0.0, 1.0)] * kinds[j]
            groups.append(list(range(first, len(columns))))
        else:
            groups.append([len(columns)])
            columns.append(X[:, j])
            bounds.append((low[j], high[j]))
    effects = _forest_main_effects(np.column_stack(columns), y, np.array(bounds), groups, n_trees, max_depth, seed)
    out[searched] = effects
    return out


def _forest_main_effects(
    X: np.ndarray, y: np.ndarray, bounds: np.ndarray, groups: list[list[int]], n_trees: int, max_depth: int,
    seed: int | None,
) -> np.ndarray:
    """optuna's `_Fanova.fit` + `get_importance` on encoded columns: one number per group of columns."""
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(
        n_estimators=n_trees, max_depth=max_depth, min_samples_split=2, min_samples_leaf=1, random_state=seed
    ).fit(X, y)
    trees = [estimator.tree_ for estimator in forest.estimators_]
    tree, lo, hi, value, splits = _leaves(trees, len(bounds))
    extent = np.where(np.isinf(hi), bounds[:, 1], hi) - np.where(np.isinf(lo), bounds[:, 0], lo)
    volume = np.prod(extent, axis=1)
    total = np.bincount(tree, volume, n_trees)
    mean = np.bincount(tree, volume * value, n_trees) / total
    variance = np.bincount(tree, volume * (value - mean[tree]) ** 2, n_trees) / total
    # A tree of zero variance says nothing and is skipped, as in optuna. Trees whose leaves agree to rounding
    # (a bootstrap sample with one distinct y: sklearn still splits it on rounding noise) count as zero here;
    # optuna keeps those whose variance is a rounding error and adds one rounding error over another.
    keep = variance > (1e-12 * mean) ** 2
    if not keep.any():
        raise RuntimeError("Encountered zero total variance in all trees.")
    leaf = (tree, lo, hi, extent, volume, value - mean[tree])
    marginal = np.column_stack([_marginal_variances(group, *leaf, bounds, splits, n_trees) for group in groups])
    return np.mean(marginal[keep] / variance[keep, None], axis=0)


def _leaves(trees: list, n_features: int) -> tuple[np.ndarray, ...]:
    """Every leaf of the forest: its tree, its box (lower, upper per column) and value; and every split:
    its tree, column and threshold. The trees' nodes are concatenated so that numpy walks the whole forest
    level by level at once. A side of a box that no split bounds is ±inf, so that a point on the search
    space's bound is inside it (the caller puts the bounds in)."""
    counts = [t.node_count for t in trees]
    first = np.cumsum([0, *counts[:-1]])
    feature = np.concatenate([t.feature for t in trees])
    threshold = np.concatenate([t.threshold for t in trees])
    left = np.concatenate([t.children_left + f for t, f in zip(trees, first)])
    right = np.concatenate([t.children_right + f for t, f in zip(trees, first)])
    lo = np.full((len(feature), n_features), -np.inf)
    hi = np.full((len(feature), n_features), np.inf)
    nodes = first
    while nodes.size:
        nodes = nodes[feature[nodes] >= 0]
        lt, rt, f = left[nodes], right[nodes], feature[nodes]
        lo[lt] = lo[rt] = lo[nodes]
        hi[lt] = hi[rt] = hi[nodes]
        hi[lt, f] = lo[rt, f] = threshold[nodes]  # optuna: x <= threshold goes left
        nodes = np.concatenate([lt, rt])
    tree = np.repeat(np.arange(len(trees)), counts)
    value = np.concatenate([t.value[:, 0, 0] for t in trees])
    leaf = feature < 0
    return tree[leaf], lo[leaf], hi[leaf], value[leaf], (tree[~leaf], feature[~leaf], threshold[~leaf])


def _marginal_variances(
    group: list[int], tree: np.ndarray, lo: np.ndarray, hi: np.ndarray, extent: np.ndarray, volume: np.ndarray,
    centred: np.ndarray, bounds: np.ndarray, splits: tuple[np.ndarray, ...], n_trees: int,
) -> np.ndarray:
    """Per tree, the variance over the search space of its marginal prediction on the columns of `group`.
    The marginal is constant on each cell of the grid of split intervals on those columns (here those of
    all trees: a finer grid than optuna's per tree, the same variance): a cell's value is the mean of the
    leaves that cover it weighted by their volume outside the group, its weight its size times that volume.
    The leaves that cover each cell are summed with a difference array: a leaf adds at its lower corner and
    cancels past each upper side it has inside the grid; cumulative sums along the axes spread it."""
    split_tree, split_feature, split_threshold = splits
    outside = volume / np.prod(extent[:, group], axis=1)
    rows, flat, sign = np.arange(len(tree)), tree, np.ones(len(tree))
    shape, size = [n_trees], np.ones(1)
    for c in group:
        cuts = np.unique(split_threshold[split_feature == c])
        edges = np.concatenate([[-np.inf], cuts, [np.inf]])
        start = np.searchsorted(edges, lo[:, c], side="right") - 1
        stop = np.searchsorted(edges, hi[:, c], side="left")
        flat = flat * (len(cuts) + 1) + start[rows]
        ends = stop[rows] <= len(cuts)  # the leaf's upper side on c is inside the grid: cancel past it
        flat = np.concatenate([flat, flat[ends] + (stop - start)[rows[ends]]])
        rows, sign = np.concatenate([rows, rows[ends]]), np.concatenate([sign, -sign[ends]])
        shape.append(len(cuts) + 1)
        size = np.outer(size, np.diff(np.concatenate([bounds[c, :1], cuts, bounds[c, 1:]]))).ravel()
    grids = [np.bincount(flat, sign * x[rows], np.prod(shape)).reshape(shape) for x in (outside * centred, outside)]
    for axis in range(1, len(shape)):
        grids = [np.cumsum(grid, axis=axis) for grid in grids]
    total, cover = (grid.reshape(n_trees, -1) for grid in grids)
    marginal, weight = total / cover, cover * size
    mean = (weight * marginal).sum(axis=1) / weight.sum(axis=1)
    variance = (weight * (marginal - mean[:, None]) ** 2).sum(axis=1) / weight.sum(axis=1)
    splits_group = np.bincount(split_tree[np.isin(split_feature, group)], minlength=n_trees) > 0
    return np.where(splits_group, variance, 0.0)  # a tree that does not split on the group: a constant
