"""The durability model file: a fitted per-arm :class:`SurvivalSelector` as NPZ + JSON.

Written and read through :mod:`brainmatch.selection.modelfile` (bounded reading, content
hash, keyed signature, never a pickle) with its own ``format`` string.  The metadata's
``learner`` says what the arrays hold.  ``cox`` (``lasso-cox`` and ``per-arm``): each arm's
Cox model as plain arrays (standardised coefficients, feature mean and scale, the Breslow
baseline cumulative hazard and its event times); each bootstrap refit as its coefficients,
scaling and baseline cumulative hazard on :data:`N_GRID` times from 0 to the horizon (the
survival curve at those times, the horizon included, is therefore reproduced exactly).
``pseudo``: each arm's lasso coefficients and intercepts at the :data:`N_GRID` times, with
the feature mean and scale, and the same for every bootstrap refit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch.durability.selector import (
    N_GRID,
    CoxModel,
    PseudoSurvivalModel,
    SurvivalSelector,
    curve_times,
)
from brainmatch.errors import BrainmatchInputError

FORMAT = "brainmatch-durability-model"
FORMAT_VERSION = 1
WHAT = "durability (time-to-relapse) model"
#: Arrays per arm; the model file allows 64 members.
MAX_ARMS = 10
#: What each saveable learner is stored as.
LEARNER = {"lasso-cox": "cox", "per-arm": "cox", "pseudo": "pseudo"}

__all__ = ["N_GRID", "curve_times", "load_durability_model", "save_durability_model"]


def _cumhaz_at(model: CoxModel, times: NDArray[np.float64]) -> NDArray[np.float64]:
    idx = np.searchsorted(model.times_, times, side="right") - 1
    return np.where(idx >= 0, model.cumhaz_[np.maximum(idx, 0)], 0.0)


def save_durability_model(
    path: str | Path, selector: SurvivalSelector, meta: dict[str, Any]
) -> Path:
    """Write a fitted per-arm ``selector`` and ``meta`` (JSON) to a signed ``.npz`` file."""
    from brainmatch.selection.modelfile import save_model

    if selector.model_ not in LEARNER:
        raise BrainmatchInputError(
            f"model {selector.model_!r}: only {', '.join(LEARNER)} models can be saved"
        )
    if len(selector.arms_) > MAX_ARMS:
        raise BrainmatchInputError(f"treatment: at most {MAX_ARMS} arms in a model file")
    learner = LEARNER[selector.model_]
    full = {
        **meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "learner": learner,
        "model": selector.model_,
        "arms": list(selector.arms_),
        "horizon": float(selector.horizon),
        "penalizer": float(selector.penalizer_),
        "level": float(selector.level),
        "n_bootstrap_fitted": len(selector.boot_),
    }
    grid = curve_times(selector.horizon)
    arrays: dict[str, NDArray[Any]] = {"grid": grid}
    combat = getattr(selector, "combat_", None)
    if combat is not None:  # site harmonisation fitted on every patient
        full["combat_sites"] = [str(v) for v in combat.sites_]
        for name in ("grand_mean", "var_pooled", "beta_covariates", "gamma", "delta"):
            arrays[f"combat_{name}"] = np.asarray(getattr(combat, f"{name}_"), dtype=float)
    if learner == "pseudo":
        for k, m in enumerate(selector.models_):
            arrays[f"arm{k}_coef"] = m.coef_
            arrays[f"arm{k}_intercept"] = m.intercept_
            arrays[f"arm{k}_mean"] = m.mean_
            arrays[f"arm{k}_scale"] = m.scale_
        if selector.boot_:
            for name in ("coef", "intercept", "mean", "scale"):
                arrays[f"boot_{name}"] = np.array(
                    [[getattr(m, f"{name}_") for m in b] for b in selector.boot_]
                )
        return save_model(path, arrays, full)
    for k, m in enumerate(selector.models_):
        arrays[f"arm{k}_coef_std"] = m.coef_std_
        arrays[f"arm{k}_mean"] = m.mean_
        arrays[f"arm{k}_scale"] = m.scale_
        arrays[f"arm{k}_times"] = m.times_
        arrays[f"arm{k}_cumhaz"] = m.cumhaz_
    if selector.boot_:
        boot = selector.boot_
        arrays["boot_coef_std"] = np.array([[m.coef_std_ for m in b] for b in boot])
        arrays["boot_mean"] = np.array([[m.mean_ for m in b] for b in boot])
        arrays["boot_scale"] = np.array([[m.scale_ for m in b] for b in boot])
        arrays["boot_cumhaz"] = np.array([[_cumhaz_at(m, grid) for m in b] for b in boot])
    return save_model(path, arrays, full)


def is_durability_model(path: str | Path) -> bool:
    """Whether ``path`` declares the durability format (nothing verified yet: the signature
    and content are checked by :func:`load_durability_model`)."""
    import json

    from brainmatch.selection.modelfile import _META, _read_members

    p = Path(path)
    if not p.is_file():
        return False
    try:
        blob = _read_members(p).get(_META)
        meta = json.loads(blob.tobytes().decode("utf-8")) if blob is not None else None
    except (BrainmatchInputError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _cox(coef: Any, mean: Any, scale: Any, times: Any, cumhaz: Any) -> CoxModel:
    m = CoxModel()
    m.coef_std_ = np.asarray(coef, dtype=float)
    m.mean_ = np.asarray(mean, dtype=float)
    m.scale_ = np.asarray(scale, dtype=float)
    m.coef_ = m.coef_std_ / m.scale_
    m.times_ = np.asarray(times, dtype=float)
    m.cumhaz_ = np.asarray(cumhaz, dtype=float)
    return m


def load_durability_model(
    path: str | Path, *, trust: bool = False
) -> tuple[SurvivalSelector, dict[str, Any]]:
    """Read a durability model file: signed, intact, plausible; return the selector and meta."""
    from brainmatch.selection.modelfile import read_signed

    arrays, meta = read_signed(path, fmt=FORMAT, what=WHAT, trust=trust)

    def bad(msg: str) -> BrainmatchInputError:
        return BrainmatchInputError(f"implausible {WHAT}: {msg}", path)

    arms = meta.get("arms")
    feats = meta.get("features")
    h = meta.get("horizon")
    if not isinstance(arms, list) or not 2 <= len(arms) <= MAX_ARMS:
        raise bad("arms")
    if not isinstance(feats, list) or not feats:
        raise bad("features")
    if not isinstance(h, int | float) or not h > 0:
        raise bad("horizon")
    p = len(feats)
    learner = meta.get("learner", "cox")
    model = meta.get("model", "per-arm")
    if learner not in ("cox", "pseudo") or LEARNER.get(model) != learner:
        raise bad(f"learner {learner!r} / model {model!r}")
    sel = SurvivalSelector(horizon=float(h), model=model, level=float(meta.get("level", 0.95)))
    sel.arms_ = [str(a) for a in arms]
    sel.model_ = model
    sel.model_scores_ = {}
    sel.penalizer_ = float(meta.get("penalizer", 0.0))
    sel.combat_ = _load_combat(arrays, meta, p, bad)
    if learner == "pseudo":
        _load_pseudo(sel, arrays, p, float(h), bad)
        return sel, meta
    models = []
    for k in range(len(arms)):
        try:
            parts = [
                arrays[f"arm{k}_{n}"] for n in ("coef_std", "mean", "scale", "times", "cumhaz")
            ]
        except KeyError:
            raise bad(f"arm {k} arrays missing") from None
        if any(a.shape != (p,) for a in parts[:3]) or parts[3].shape != parts[4].shape:
            raise bad(f"arm {k} array shapes")
        if not all(np.all(np.isfinite(a)) for a in parts) or np.any(parts[2] <= 0):
            raise bad(f"arm {k} has non-finite values")
        if np.any(np.diff(parts[3]) < 0) or np.any(np.diff(parts[4]) < 0) or np.any(parts[4] < 0):
            raise bad(f"arm {k}'s baseline cumulative hazard is not a non-decreasing function")
        models.append(_cox(*parts))
    sel.models_ = models
    sel.boot_ = []
    if "boot_coef_std" in arrays:
        grid = arrays.get("grid")
        c, mu, sc, ch = (arrays[f"boot_{n}"] for n in ("coef_std", "mean", "scale", "cumhaz"))
        b = c.shape[0]
        if (
            grid is None
            or c.shape != (b, len(arms), p)
            or mu.shape != c.shape
            or sc.shape != c.shape
            or ch.shape != (b, len(arms), grid.size)
            or not np.isclose(grid[-1], h)
        ):
            raise bad("bootstrap array shapes")
        if not all(np.all(np.isfinite(v)) for v in (c, mu, sc, ch)) or np.any(sc <= 0):
            raise bad("bootstrap arrays have non-finite values")
        if np.any(ch < 0) or np.any(np.diff(ch, axis=-1) < 0):
            raise bad("a bootstrap baseline cumulative hazard decreases")
        sel.boot_ = [
            [_cox(c[i, k], mu[i, k], sc[i, k], grid, ch[i, k]) for k in range(len(arms))]
            for i in range(b)
        ]
    return sel, meta


def _pseudo(
    horizon: float, coef: Any, intercept: Any, mean: Any, scale: Any
) -> PseudoSurvivalModel:
    m = PseudoSurvivalModel(horizon)
    m.times_ = curve_times(horizon)
    m.coef_ = np.asarray(coef, dtype=float)
    m.intercept_ = np.asarray(intercept, dtype=float)
    m.mean_ = np.asarray(mean, dtype=float)
    m.scale_ = np.asarray(scale, dtype=float)
    return m


def _load_pseudo(
    sel: SurvivalSelector, arrays: dict[str, NDArray[Any]], p: int, h: float, bad: Any
) -> None:
    """Rebuild the per-arm pseudo-observation lassos (and bootstrap refits) of a model file."""
    k_arms = len(sel.arms_)
    names = ("coef", "intercept", "mean", "scale")
    shapes = ((N_GRID, p), (N_GRID,), (p,), (p,))
    grid = arrays.get("grid")
    if grid is None or grid.shape != (N_GRID,) or not np.isclose(grid[-1], h):
        raise bad("grid")
    models = []
    for k in range(k_arms):
        try:
            parts = [arrays[f"arm{k}_{n}"] for n in names]
        except KeyError:
            raise bad(f"arm {k} arrays missing") from None
        if any(a.shape != s for a, s in zip(parts, shapes, strict=True)):
            raise bad(f"arm {k} array shapes")
        if not all(np.all(np.isfinite(a)) for a in parts) or np.any(parts[3] <= 0):
            raise bad(f"arm {k} has non-finite values")
        models.append(_pseudo(h, *parts))
    sel.models_ = models
    sel.boot_ = []
    if "boot_coef" in arrays:
        try:
            boot = [arrays[f"boot_{n}"] for n in names]
        except KeyError:
            raise bad("bootstrap arrays missing") from None
        b = boot[0].shape[0]
        if any(a.shape != (b, k_arms, *s) for a, s in zip(boot, shapes, strict=True)):
            raise bad("bootstrap array shapes")
        if not all(np.all(np.isfinite(a)) for a in boot) or np.any(boot[3] <= 0):
            raise bad("bootstrap arrays have non-finite values")
        sel.boot_ = [
            [_pseudo(h, *(a[i, k] for a in boot)) for k in range(k_arms)] for i in range(b)
        ]


def _load_combat(arrays: dict[str, NDArray[Any]], meta: dict[str, Any], p: int, bad: Any) -> Any:
    """The ComBat of a model trained with ``site_column`` (None otherwise)."""
    sites = meta.get("combat_sites")
    if sites is None:
        return None
    from brainmatch.harmonize import ComBat

    names = ("grand_mean", "var_pooled", "beta_covariates", "gamma", "delta")
    try:
        parts = {n: np.asarray(arrays[f"combat_{n}"], dtype=float) for n in names}
    except KeyError:
        raise bad("site harmonisation arrays missing") from None
    k = len(sites) if isinstance(sites, list) else -1
    if (
        k < 2
        or parts["grand_mean"].shape != (p,)
        or parts["var_pooled"].shape != (p,)
        or parts["beta_covariates"].shape != (0, p)
        or parts["gamma"].shape != (k, p)
        or parts["delta"].shape != (k, p)
        or not all(np.all(np.isfinite(v)) for v in parts.values())
        or np.any(parts["var_pooled"] <= 0)
        or np.any(parts["delta"] <= 0)
    ):
        raise bad("site harmonisation arrays")
    cb = ComBat()
    cb.sites_ = np.array([str(v) for v in sites], dtype=str)
    cb.ref_site_ = None
    for n in names:
        setattr(cb, f"{n}_", parts[n])
    cb.n_features_in_ = p
    return cb
