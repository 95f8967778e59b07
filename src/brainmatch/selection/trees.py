"""Fitted models as plain numeric arrays: gradient-boosted trees and linear parts.

A non-linear learner (a T-, X-, DR- or R-learner over ``HistGradientBoosting*``) predicts
every arm's outcome as a weighted sum of *components* on the model input ``X = [Z, C]``
(standardised features, then the covariate design)::

    g_e(X)  = out_e(baseline_e + X @ linear_e + sum_{trees t of e} tree_t(X))
    pred_a  = link(Z @ coef_a + intercept_a + C @ cov_coef_a + sum_e W[a, e] g_e(X))

with ``out_e`` the identity (a regressor, or a lasso), the logistic function (a binary
classifier: the probability of 1), the cosine (a random Fourier feature of an RBF kernel,
:func:`export_fourier`: ``cos(phase_e + Z @ w_e)``), the hinge (:func:`export_hinges`:
``max(0, z_j - knot)``) or the square (:func:`export_products`: ``(z_i +- z_j)^2``, two
of which make a product of features).  A linear learner is the special case
without components.  :func:`export_hgb` turns a fitted scikit-learn
``HistGradientBoostingRegressor`` (squared error) or binary
``HistGradientBoostingClassifier`` into a component: its trees' node records (split
feature, numeric threshold, where a missing value goes, children, leaf value) and its
baseline prediction, with no Python object anywhere, so the safe model file
(:mod:`brainmatch.selection.modelfile`) can store it and load it without unpickling.
:meth:`Components.evaluate` is our own vectorised tree traversal (tested equal to
scikit-learn's ``predict`` / ``predict_proba``, NaNs included).

:meth:`Components.from_arrays` validates everything a hostile file could break: array
kinds and shapes, offsets, finite values, split features in range, children strictly after
their parent inside the same tree (so every traversal ends within the tree's size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError

Array = NDArray[np.float64]

#: Refusal limits of a model file's tree arrays (a boosted meta-learner with 20 bootstrap
#: refits holds about 100 components x 150 trees x 61 nodes = 1M nodes; a product-basis
#: model and its 50 refits at most 51 x 50 products x 2 squares = 5100 components).
MAX_NODES = 20_000_000
MAX_COMPONENTS = 8192
#: Rows x trees traversed at once (bounds the memory of :meth:`Components.evaluate`).
_CHUNK = 2_000_000

#: Output functions of a component (``comp_output``).
OUTPUT_RAW, OUTPUT_LOGISTIC, OUTPUT_COSINE, OUTPUT_HINGE, OUTPUT_SQUARE = 0, 1, 2, 3, 4

#: Array names in the model file.
TREE_ARRAYS = (
    "tree_feature",
    "tree_threshold",
    "tree_missing_left",
    "tree_left",
    "tree_right",
    "tree_value",
    "tree_is_leaf",
    "tree_node_offsets",
    "comp_tree_offsets",
    "comp_baseline",
    "comp_linear",
    "comp_output",
)


@dataclass
class Components:
    """A pool of components (tree ensembles and/or linear parts) on inputs of width ``d``.

    Attributes
    ----------
    feature, threshold, missing_left, left, right, value, is_leaf : ndarray (n_nodes,)
        Node records of every tree, trees stored one after another; ``left`` / ``right``
        are global node indices.
    node_offsets : ndarray (n_trees + 1,)
        First node of every tree.
    tree_offsets : ndarray (n_components + 1,)
        First tree of every component.
    baseline : ndarray (n_components,)
    linear : ndarray (n_components, d)
    output : ndarray (n_components,)
        0: raw value, 1: logistic (probability), 2: cosine (random Fourier feature),
        3: hinge ``max(0, value)`` (:func:`export_hinges`), 4: square ``value^2``
        (:func:`export_products`).
    """

    feature: NDArray[np.int32]
    threshold: Array
    missing_left: NDArray[np.uint8]
    left: NDArray[np.int32]
    right: NDArray[np.int32]
    value: Array
    is_leaf: NDArray[np.uint8]
    node_offsets: NDArray[np.int64]
    tree_offsets: NDArray[np.int64]
    baseline: Array
    linear: Array
    output: NDArray[np.uint8]

    @property
    def n_components(self) -> int:
        return int(self.baseline.size)

    # -------------------------------------------------------------------------------- build
    @classmethod
    def empty(cls, d: int) -> Components:
        return cls(
            np.zeros(0, np.int32),
            np.zeros(0),
            np.zeros(0, np.uint8),
            np.zeros(0, np.int32),
            np.zeros(0, np.int32),
            np.zeros(0),
            np.zeros(0, np.uint8),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros(0),
            np.zeros((0, d)),
            np.zeros(0, np.uint8),
        )

    @classmethod
    def concat(cls, parts: list[Components], d: int) -> Components:
        """One pool holding every part's components in order."""
        out = cls.empty(d)
        for part in parts:
            out = out._append(part)
        return out

    def _append(self, o: Components) -> Components:
        n0, t0 = self.value.size, self.node_offsets.size - 1
        shift = np.where(o.is_leaf.astype(bool), 0, n0).astype(np.int32)
        return Components(
            np.concatenate([self.feature, o.feature]),
            np.concatenate([self.threshold, o.threshold]),
            np.concatenate([self.missing_left, o.missing_left]),
            np.concatenate([self.left, o.left + shift]),
            np.concatenate([self.right, o.right + shift]),
            np.concatenate([self.value, o.value]),
            np.concatenate([self.is_leaf, o.is_leaf]),
            np.concatenate([self.node_offsets, o.node_offsets[1:] + n0]),
            np.concatenate([self.tree_offsets, o.tree_offsets[1:] + t0]),
            np.concatenate([self.baseline, o.baseline]),
            np.vstack([self.linear, o.linear]),
            np.concatenate([self.output, o.output]),
        )

    # ------------------------------------------------------------------------------ predict
    def evaluate(self, X: Array) -> Array:
        """Every component's output on the rows of ``X`` (n, d) -> (n, n_components)."""
        X = np.asarray(X, dtype=float)
        n = X.shape[0]
        # linear parts: a missing input counts as 0 (the training mean of a standardised
        # feature; the pipeline imputes before this anyway)
        raw = self.baseline[None, :] + np.nan_to_num(X, nan=0.0) @ self.linear.T
        n_trees = self.node_offsets.size - 1
        if n_trees and n:
            leaf_values = np.empty((n, n_trees))
            roots = self.node_offsets[:-1]
            step = max(1, _CHUNK // n_trees)
            for start in range(0, n, step):
                rows = slice(start, min(n, start + step))
                leaf_values[rows] = self.value[_traverse(self, X[rows], roots)]
            for e in range(self.n_components):
                a, b = self.tree_offsets[e], self.tree_offsets[e + 1]
                if b > a:
                    raw[:, e] += leaf_values[:, a:b].sum(axis=1)
        logistic = self.output == OUTPUT_LOGISTIC
        raw[:, logistic] = 0.5 * (1.0 + np.tanh(0.5 * raw[:, logistic]))
        cosine = self.output == OUTPUT_COSINE
        raw[:, cosine] = np.cos(raw[:, cosine])
        hinge = self.output == OUTPUT_HINGE
        raw[:, hinge] = np.maximum(raw[:, hinge], 0.0)
        square = self.output == OUTPUT_SQUARE
        raw[:, square] = raw[:, square] ** 2
        return np.asarray(raw)

    def head(self, m: int) -> Components:
        """The first ``m`` components."""
        t = int(self.tree_offsets[m])
        n = int(self.node_offsets[t])
        return Components(
            self.feature[:n],
            self.threshold[:n],
            self.missing_left[:n],
            self.left[:n],
            self.right[:n],
            self.value[:n],
            self.is_leaf[:n],
            self.node_offsets[: t + 1],
            self.tree_offsets[: m + 1],
            self.baseline[:m],
            self.linear[:m],
            self.output[:m],
        )

    def take(self, keep: NDArray[np.intp]) -> Components:
        """The components ``keep``, in that order, with their trees."""
        keep = np.asarray(keep, dtype=np.intp)
        t0, t1 = self.tree_offsets[keep], self.tree_offsets[keep + 1]
        trees = _ranges(t0, t1)
        n0, n1 = self.node_offsets[trees], self.node_offsets[trees + 1]
        nodes = _ranges(n0, n1)
        node_offsets = np.concatenate([[0], np.cumsum(n1 - n0)]).astype(np.int64)
        shift = np.repeat(node_offsets[:-1] - n0, n1 - n0)
        split = self.is_leaf[nodes] == 0
        own = np.arange(nodes.size)
        return Components(
            self.feature[nodes],
            self.threshold[nodes],
            self.missing_left[nodes],
            np.where(split, self.left[nodes] + shift, own).astype(np.int32),
            np.where(split, self.right[nodes] + shift, own).astype(np.int32),
            self.value[nodes],
            self.is_leaf[nodes],
            node_offsets,
            np.concatenate([[0], np.cumsum(t1 - t0)]).astype(np.int64),
            self.baseline[keep],
            self.linear[keep],
            self.output[keep],
        )

    def equal_components(self) -> NDArray[np.intp]:
        """For every component, the first component equal to it (itself if none is): a
        tree-less component equals another with the same baseline, linear part and output;
        a component with trees equals only itself."""
        first = np.arange(self.n_components)
        treeless = np.flatnonzero(np.diff(self.tree_offsets) == 0)
        if treeless.size > 1:
            rows = np.column_stack(
                [self.baseline[treeless], self.output[treeless], self.linear[treeless]]
            )
            _, where, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
            first[treeless] = treeless[where[inverse.ravel()]]
        return first

    def used_inputs(self, components: NDArray[np.intp] | None = None) -> NDArray[np.intp]:
        """Input columns that any (of the given) component's splits or linear part use."""
        comps = np.arange(self.n_components) if components is None else components
        used = np.zeros(self.linear.shape[1], dtype=bool)
        for e in comps:
            used |= self.linear[e] != 0
            t0, t1 = self.tree_offsets[e], self.tree_offsets[e + 1]
            n0, n1 = self.node_offsets[t0], self.node_offsets[t1]
            split = self.is_leaf[n0:n1] == 0
            used[self.feature[n0:n1][split]] = True
        return np.flatnonzero(used)

    # --------------------------------------------------------------------------- arrays
    def to_arrays(self) -> dict[str, NDArray[Any]]:
        return dict(
            zip(
                TREE_ARRAYS,
                (
                    self.feature,
                    self.threshold,
                    self.missing_left,
                    self.left,
                    self.right,
                    self.value,
                    self.is_leaf,
                    self.node_offsets,
                    self.tree_offsets,
                    self.baseline,
                    self.linear,
                    self.output,
                ),
                strict=True,
            )
        )

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray[Any]], d: int, bad: Any) -> Components:
        """Rebuild and validate a pool read from a model file (``bad(msg)`` -> exception)."""
        for name in TREE_ARRAYS:
            if name not in arrays:
                raise bad(f"array {name!r} is missing")
        a = {name: arrays[name] for name in TREE_ARRAYS}
        n = a["tree_value"].shape[0] if a["tree_value"].ndim == 1 else -1
        if not 0 <= n <= MAX_NODES:
            raise bad(f"'tree_value' is not a vector of at most {MAX_NODES} nodes")
        kinds = {"i": "tree_feature tree_left tree_right tree_node_offsets comp_tree_offsets"}
        for name in TREE_ARRAYS:
            arr = a[name]
            want = 2 if name == "comp_linear" else 1
            if arr.ndim != want:
                raise bad(f"{name!r} has {arr.ndim} dimensions, expected {want}")
            integer = name in kinds["i"].split() or name in (
                "tree_missing_left",
                "tree_is_leaf",
                "comp_output",
            )
            if integer and arr.dtype.kind not in "iub":
                raise bad(f"{name!r} is not an integer array")
            if not integer and arr.dtype.kind != "f":
                raise bad(f"{name!r} is not a floating-point array")
        for name in TREE_ARRAYS[:7]:
            if a[name].shape != (n,):
                raise bad(f"{name!r} has shape {a[name].shape}, expected ({n},)")
        e = a["comp_baseline"].shape[0]
        if not 1 <= e <= MAX_COMPONENTS:
            raise bad(f"the model holds {e} components (1 to {MAX_COMPONENTS} expected)")
        if a["comp_linear"].shape != (e, d) or a["comp_output"].shape != (e,):
            raise bad(
                f"'comp_linear' / 'comp_output' have shapes {a['comp_linear'].shape} / "
                f"{a['comp_output'].shape}, expected ({e}, {d}) / ({e},)"
            )
        node_off = a["tree_node_offsets"].astype(np.int64)
        tree_off = a["comp_tree_offsets"].astype(np.int64)
        n_trees = node_off.size - 1
        if (
            node_off.size < 1
            or node_off[0] != 0
            or node_off[-1] != n
            or (np.diff(node_off) < 1).any()
        ):
            raise bad("'tree_node_offsets' do not split the nodes into non-empty trees")
        if (
            tree_off.size != e + 1
            or tree_off[0] != 0
            or tree_off[-1] != n_trees
            or (np.diff(tree_off) < 0).any()
        ):
            raise bad("'comp_tree_offsets' do not split the trees among the components")
        for name in ("tree_value", "comp_baseline", "comp_linear"):
            if not np.isfinite(a[name]).all():
                raise bad(f"{name!r} holds NaN or infinite values")
        if np.isnan(a["tree_threshold"]).any():
            raise bad("'tree_threshold' holds NaN")
        for name in ("tree_missing_left", "tree_is_leaf"):
            if ((a[name] != 0) & (a[name] != 1)).any():
                raise bad(f"{name!r} holds values other than 0 and 1")
        outputs = (OUTPUT_RAW, OUTPUT_LOGISTIC, OUTPUT_COSINE, OUTPUT_HINGE, OUTPUT_SQUARE)
        if not np.isin(a["comp_output"], outputs).all():
            raise bad("'comp_output' holds values other than 0, 1, 2, 3 and 4")
        feature = a["tree_feature"].astype(np.int64)
        if ((feature < 0) | (feature >= d)).any():
            raise bad(f"'tree_feature' holds split features outside 0..{d - 1}")
        # children strictly after their parent and inside its tree: traversal always ends
        tree_of = np.repeat(np.arange(n_trees), np.diff(node_off))
        end = node_off[1:][tree_of]
        idx = np.arange(n)
        split = a["tree_is_leaf"] == 0
        for name in ("tree_left", "tree_right"):
            child = a[name].astype(np.int64)
            ok = (child > idx) & (child < end)
            if not ok[split].all():
                raise bad(f"{name!r} points outside its tree or backwards (not a tree)")
        return cls(
            feature.astype(np.int32),
            a["tree_threshold"].astype(float),
            a["tree_missing_left"].astype(np.uint8),
            np.where(split, a["tree_left"], idx).astype(np.int32),
            np.where(split, a["tree_right"], idx).astype(np.int32),
            a["tree_value"].astype(float),
            a["tree_is_leaf"].astype(np.uint8),
            node_off,
            tree_off,
            a["comp_baseline"].astype(float),
            a["comp_linear"].astype(float),
            a["comp_output"].astype(np.uint8),
        )


def _ranges(start: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray[np.int64]:
    """``concatenate([arange(a, b) for a, b in zip(start, stop)])`` without the loop."""
    size = stop - start
    if not size.size:
        return np.zeros(0, np.int64)
    offsets = np.repeat(start - np.concatenate([[0], np.cumsum(size)[:-1]]), size)
    return np.asarray(np.arange(int(size.sum())) + offsets, dtype=np.int64)


def _traverse(c: Components, X: Array, roots: NDArray[np.int64]) -> NDArray[np.int64]:
    """Leaf index reached by every row in every tree, (n, n_trees): all trees at once,
    one tree level per step (a split sends NaN where ``missing_left`` says, else
    ``x <= threshold`` to the left, as scikit-learn's predictor does)."""
    n = X.shape[0]
    cur = np.broadcast_to(roots, (n, roots.size)).copy()
    rows = np.arange(n)[:, None]
    leaf = c.is_leaf.astype(bool)
    missing_left = c.missing_left.astype(bool)
    for _ in range(int(np.diff(c.node_offsets).max(initial=1))):
        active = ~leaf[cur]
        if not active.any():
            break
        x = X[rows, c.feature[cur]]
        go_left = np.where(np.isnan(x), missing_left[cur], x <= c.threshold[cur])
        cur = np.where(active, np.where(go_left, c.left[cur], c.right[cur]), cur)
    return cur


def export_hgb(est: Any) -> Components:
    """A fitted ``HistGradientBoostingRegressor`` (squared error) or binary
    ``HistGradientBoostingClassifier`` (log-loss) as one component (numeric arrays only).

    Raises
    ------
    BrainmatchInputError
        Categorical splits, another loss, or more than two classes (not storable).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if isinstance(est, HistGradientBoostingClassifier):
        if len(est.classes_) != 2:
            raise BrainmatchInputError("only binary gradient-boosted classifiers can be stored")
        output = 1
    elif isinstance(est, HistGradientBoostingRegressor):
        if est.loss != "squared_error":
            raise BrainmatchInputError(
                f"only squared-error gradient boosting can be stored (loss={est.loss!r})"
            )
        output = 0
    else:
        raise BrainmatchInputError(f"cannot store a {type(est).__name__} as trees")
    d = int(est.n_features_in_)
    parts = []
    offset = 0
    node_offsets = [0]
    for iteration in est._predictors:
        if len(iteration) != 1:
            raise BrainmatchInputError("only single-output gradient boosting can be stored")
        nodes = iteration[0].nodes
        if nodes["is_categorical"].any():
            raise BrainmatchInputError("gradient boosting with categorical splits is not stored")
        parts.append(nodes)
        offset += nodes.size
        node_offsets.append(offset)
    nodes = np.concatenate(parts)
    leaf = nodes["is_leaf"].astype(np.uint8)
    tree_start = np.repeat(np.asarray(node_offsets[:-1]), np.diff(node_offsets))
    split = leaf == 0
    left = np.where(split, nodes["left"].astype(np.int64) + tree_start, 0)
    right = np.where(split, nodes["right"].astype(np.int64) + tree_start, 0)
    baseline = float(np.asarray(est._baseline_prediction).ravel()[0])
    return Components(
        np.where(split, nodes["feature_idx"], 0).astype(np.int32),
        np.where(split, nodes["num_threshold"], 0.0).astype(float),
        nodes["missing_go_to_left"].astype(np.uint8),
        left.astype(np.int32),
        right.astype(np.int32),
        nodes["value"].astype(float),
        leaf,
        np.asarray(node_offsets, dtype=np.int64),
        np.array([0, len(parts)], dtype=np.int64),
        np.array([baseline]),
        np.zeros((1, d)),
        np.array([output], dtype=np.uint8),
    )


def export_linear(coef: Array, intercept: float, logistic: bool = False) -> Components:
    """A linear (or logistic) model on the inputs as one tree-less component."""
    c = Components.empty(coef.size)
    c.baseline = np.array([float(intercept)])
    c.linear = np.asarray(coef, dtype=float)[None, :].copy()
    c.output = np.array([int(logistic)], dtype=np.uint8)
    c.tree_offsets = np.zeros(2, np.int64)
    return c


def export_fourier(weights: Array, phases: Array, d: int) -> Components:
    """Random Fourier features ``cos(phase_e + x[:p] @ weights[:, e])`` as tree-less cosine
    components on inputs of width ``d`` (the first ``p = weights.shape[0]`` are the
    standardised features; the covariate columns after them get zero weight)."""
    p, n_feat = weights.shape
    c = Components.empty(d)
    c.baseline = np.asarray(phases, dtype=float).copy()
    linear = np.zeros((n_feat, d))
    linear[:, :p] = np.asarray(weights, dtype=float).T
    c.linear = linear
    c.output = np.full(n_feat, OUTPUT_COSINE, dtype=np.uint8)
    c.tree_offsets = np.zeros(n_feat + 1, np.int64)
    return c


def export_hinges(p: int, knots: Array, d: int) -> Components:
    """Hinge functions ``max(0, x[j] - knots[r])`` of each of the first ``p`` inputs as
    tree-less hinge components on inputs of width ``d``, component ``len(knots) j + r``
    (the order of :func:`brainmatch.selection.hinge.hinge_columns`)."""
    r = len(knots)
    n_comp = p * r
    c = Components.empty(d)
    c.baseline = -np.tile(np.asarray(knots, dtype=float), p)
    linear = np.zeros((n_comp, d))
    linear[np.arange(n_comp), np.repeat(np.arange(p), r)] = 1.0
    c.linear = linear
    c.output = np.full(n_comp, OUTPUT_HINGE, dtype=np.uint8)
    c.tree_offsets = np.zeros(n_comp + 1, np.int64)
    return c


def export_products(i: NDArray[np.intp], j: NDArray[np.intp], d: int) -> Components:
    """Products ``x[i_e] x[j_e]`` of pairs of inputs as two tree-less square components
    each, ``(x[i] + x[j])^2`` then ``(x[i] - x[j])^2`` (their difference over 4 is the
    product), on inputs of width ``d``."""
    n_pairs = len(i)
    c = Components.empty(d)
    c.baseline = np.zeros(2 * n_pairs)
    linear = np.zeros((2 * n_pairs, d))
    rows = np.arange(n_pairs)
    linear[2 * rows, i] = 1.0
    linear[2 * rows, j] = 1.0
    linear[2 * rows + 1, i] = 1.0
    linear[2 * rows + 1, j] = -1.0
    c.linear = linear
    c.output = np.full(2 * n_pairs, OUTPUT_SQUARE, dtype=np.uint8)
    c.tree_offsets = np.zeros(2 * n_pairs + 1, np.int64)
    return c
