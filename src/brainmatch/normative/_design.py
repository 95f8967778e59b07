"""Design matrices of normative models: B-spline covariates, categorical dummies, site.

A :class:`DesignSpec` is learned from the controls' covariate table (which columns are
numeric and smooth, which are categorical, the spline knots, the site levels) and then
turns any covariate table into the same columns, so that a patient is described exactly
as the controls were.  Everything in the spec is plain JSON (it is stored in the model
file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError

#: Numeric covariates with more distinct values than this get a B-spline basis.
SMOOTH_MIN_UNIQUE = 8
#: Share of the covariate's range added on each side of the spline's boundary knots.
SPLINE_PAD = 0.1


def bspline_basis(
    x: NDArray[np.float64], knots: NDArray[np.float64], degree: int
) -> NDArray[np.float64]:
    """B-spline basis (Cox-de Boor recursion) at ``x`` for the full knot vector ``knots``.

    Values outside the boundary knots are clamped to them (constant extrapolation: a
    normative model is not trusted beyond its controls' range; callers warn).

    Returns
    -------
    ndarray, shape (n, len(knots) - degree - 1)
    """
    t = np.asarray(knots, dtype=float)
    lo, hi = t[degree], t[-degree - 1]
    x = np.clip(np.asarray(x, dtype=float), lo, hi)
    n_basis = len(t) - degree - 1
    # degree 0: indicator of [t_i, t_{i+1}); the last non-empty interval is closed
    b = np.zeros((x.size, len(t) - 1))
    for i in range(len(t) - 1):
        if t[i + 1] > t[i]:
            b[:, i] = (x >= t[i]) & (x < t[i + 1])
    last = np.flatnonzero(t[1:] > t[:-1])[-1]
    b[x >= t[last + 1], last] = 1.0
    for d in range(1, degree + 1):
        nb = np.zeros((x.size, len(t) - d - 1))
        for i in range(len(t) - d - 1):
            left = t[i + d] - t[i]
            right = t[i + d + 1] - t[i + 1]
            term = np.zeros(x.size)
            if left > 0:
                term += (x - t[i]) / left * b[:, i]
            if right > 0:
                term += (t[i + d + 1] - x) / right * b[:, i + 1]
            nb[:, i] = term
        b = nb
    return b[:, :n_basis]


def spline_knots(x: NDArray[np.float64], n_knots: int, degree: int) -> list[float]:
    """Full knot vector: ``n_knots`` evenly spaced knots over the padded range of ``x``."""
    lo, hi = float(np.min(x)), float(np.max(x))
    pad = SPLINE_PAD * (hi - lo)
    inner = np.linspace(lo - pad, hi + pad, n_knots)
    return [float(inner[0])] * degree + [float(v) for v in inner] + [float(inner[-1])] * degree


@dataclass
class DesignSpec:
    """How covariates become design-matrix columns (learned on the controls).

    Attributes
    ----------
    covariates : list of dict
        One entry per covariate: ``{"name", "kind": "spline"|"linear"|"categorical",
        ...}`` with the knots (spline), centre and scale (linear) or levels (categorical;
        the first level is the reference).
    sites : list of str
        Site levels seen in the controls (empty: no site column).
    columns : list of str
        Names of the design columns (for reports).
    """

    covariates: list[dict[str, Any]] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def n_columns(self) -> int:
        """Number of design columns (intercept included)."""
        return len(self.columns)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (stored in the model file)."""
        return {"covariates": self.covariates, "sites": self.sites, "columns": self.columns}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DesignSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            covariates=list(d["covariates"]), sites=list(d["sites"]), columns=list(d["columns"])
        )


def learn_design(
    table: pd.DataFrame,
    covariates: list[str],
    sites: NDArray[Any] | None,
    n_knots: int = 5,
    degree: int = 3,
) -> DesignSpec:
    """Learn a :class:`DesignSpec` from the controls' covariates.

    Parameters
    ----------
    table : DataFrame
        Controls' covariate columns.
    covariates : list of str
        Columns to model.  Numeric columns with more than :data:`SMOOTH_MIN_UNIQUE`
        distinct values get a cubic B-spline basis (age: the normative-modelling standard);
        other numeric columns a linear term; text columns dummy variables.
    sites : array of str, optional
        Site label per control (a batch effect in mean and variance).
    """
    spec = DesignSpec(columns=["intercept"])
    for name in covariates:
        col = table[name]
        num = pd.to_numeric(col, errors="coerce")
        numeric = bool(num.notna().all())
        if numeric and num.nunique() > SMOOTH_MIN_UNIQUE and n_knots >= 2:
            x = num.to_numpy(float)
            knots = spline_knots(x, n_knots, degree)
            item = {
                "name": name,
                "kind": "spline",
                "knots": knots,
                "degree": degree,
                "min": float(x.min()),
                "max": float(x.max()),
            }
            n_basis = len(knots) - degree - 1
            # the basis sums to one: drop the first column (the intercept carries it)
            spec.columns += [f"{name}:bs{j}" for j in range(1, n_basis)]
        elif numeric and num.nunique() > 1 and not _looks_categorical(num):
            x = num.to_numpy(float)
            item = {
                "name": name,
                "kind": "linear",
                "centre": float(x.mean()),
                "scale": float(x.std() or 1.0),
                "min": float(x.min()),
                "max": float(x.max()),
            }
            spec.columns.append(name)
        else:
            levels = sorted(col.astype(str).unique().tolist())
            if len(levels) < 2:
                raise BrainmatchInputError(
                    f"covariate {name!r} has a single value ({levels[0]!r}) in the controls: "
                    "it cannot be modelled; drop it from the covariates"
                )
            item = {"name": name, "kind": "categorical", "levels": levels}
            spec.columns += [f"{name}={lv}" for lv in levels[1:]]
        spec.covariates.append(item)
    if sites is not None:
        spec.sites = sorted(np.unique(np.asarray(sites, dtype=str)).tolist())
        if len(spec.sites) > 1:
            spec.columns += [f"site={s}" for s in spec.sites]
    return spec


def _looks_categorical(num: pd.Series) -> bool:
    """Numeric codes with two values (e.g. sex 1/2) are treated as categories."""
    return bool(num.nunique() <= 2)


def build_design(
    spec: DesignSpec, table: pd.DataFrame, sites: NDArray[Any] | None
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """Design matrix of ``table`` under ``spec``.

    Rows of unseen sites get the average of the seen sites' columns (1 / n_sites each): the
    prediction of an average site.  Unseen categorical levels raise.

    Returns
    -------
    design : ndarray, shape (n, spec.n_columns)
    info : dict
        ``extrapolated``: boolean array, True where a numeric covariate lies outside the
        controls' range; ``out_of_range``: list of messages; ``unseen_site``: boolean array.
    """
    n = len(table)
    parts: list[NDArray[np.float64]] = [np.ones((n, 1))]
    extrapolated = np.zeros(n, dtype=bool)
    messages: list[str] = []
    for item in spec.covariates:
        name = item["name"]
        if name not in table.columns:
            raise BrainmatchInputError(f"covariate column {name!r} is missing")
        col = table[name]
        if item["kind"] in ("spline", "linear"):
            x = pd.to_numeric(col, errors="coerce").to_numpy(float)
            if np.isnan(x).any():
                raise BrainmatchInputError(
                    f"covariate {name!r} is missing or not numeric for "
                    f"{int(np.isnan(x).sum())} row(s)"
                )
            out = (x < item["min"]) | (x > item["max"])
            if out.any():
                extrapolated |= out
                messages.append(
                    f"{name} outside the controls' range [{item['min']:g}, {item['max']:g}] for "
                    f"{int(out.sum())} row(s) (extrapolation)"
                )
            if item["kind"] == "spline":
                basis = bspline_basis(x, np.asarray(item["knots"]), int(item["degree"]))
                parts.append(basis[:, 1:])
            else:
                parts.append(((x - item["centre"]) / item["scale"])[:, None])
        else:
            values = col.astype(str).to_numpy()
            levels = item["levels"]
            unknown = sorted(set(values) - set(levels))
            if unknown:
                raise BrainmatchInputError(
                    f"covariate {name!r} has value(s) {', '.join(map(repr, unknown[:5]))} never "
                    f"seen in the controls (levels: {', '.join(levels)})"
                )
            parts.append(np.stack([(values == lv).astype(float) for lv in levels[1:]], axis=1))
    unseen = np.zeros(n, dtype=bool)
    if len(spec.sites) > 1:
        if sites is None:
            s = np.full(n, "", dtype=object)
            unseen[:] = True
        else:
            s = np.asarray(sites, dtype=str)
            unseen = ~np.isin(s, spec.sites)
        onehot = np.stack([(s == lv).astype(float) for lv in spec.sites], axis=1)
        onehot[unseen] = 1.0 / len(spec.sites)
        parts.append(onehot)
    design = np.concatenate(parts, axis=1)
    return design, {"extrapolated": extrapolated, "out_of_range": messages, "unseen_site": unseen}
