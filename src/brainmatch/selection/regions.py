"""Brain regions named in feature names, and their MNI centroids (for glass-brain figures).

Feature names such as ``conn__ctx-lh-insula__ctx-lh-rostralanteriorcingulate`` or
``vol__Left-Hippocampus`` name atlas regions between ``__`` separators.  Each part is
matched (case, spaces, ``-`` and ``_`` ignored) against the labels of the shipped
Desikan-Killiany, Harvard-Oxford and AAL atlases and the affect-network preset; the
centroid of the matching label is its MNI position.  Features naming no known region
are simply not drawn.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from brainmatch.errors import BrainmatchError

_ATLASES = ("desikan-killiany", "harvard-oxford", "aal", "affect")


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@functools.lru_cache(maxsize=4)
def _atlas_centroids(name: str) -> dict[str, tuple[float, float, float]]:
    from brainmatch import atlases

    loader = getattr(atlases, "load_atlas", None)
    atlas = loader(name) if loader is not None else atlases.load_shipped_atlas(name)
    data = np.asarray(atlas.image.dataobj).astype(np.int64)
    ijk = np.nonzero(data > 0)
    labels = data[ijk]
    counts = np.bincount(labels)
    mean_ijk = np.stack([np.bincount(labels, weights=axis) for axis in ijk], axis=1)
    present = np.flatnonzero(counts)
    xyz = (
        np.c_[mean_ijk[present] / counts[present, None], np.ones(present.size)]
        @ atlas.image.affine[:3].T
    )
    by_value = {
        int(v): (float(c[0]), float(c[1]), float(c[2])) for v, c in zip(present, xyz, strict=True)
    }
    out: dict[str, tuple[float, float, float]] = {}
    for idx, label in zip(atlas.labels["index"], atlas.labels["name"], strict=True):
        if int(idx) in by_value:
            out[_norm(str(label))] = by_value[int(idx)]
    return out


def feature_regions(name: str) -> list[str]:
    """Candidate region names inside a feature name (the parts after the kind prefix)."""
    parts = [p for p in name.split("__") if p]
    return parts[1:] if len(parts) > 1 else parts


def region_centroids(names: list[str]) -> dict[str, tuple[float, float, float]]:
    """MNI centroid of every region named in ``names`` that a shipped atlas knows."""
    wanted = {r for n in names for r in feature_regions(n)}
    found: dict[str, tuple[float, float, float]] = {}
    for atlas in _ATLASES:
        remaining = [r for r in wanted if r not in found]
        if not remaining:
            break
        try:
            table = _atlas_centroids(atlas)
        except (BrainmatchError, OSError, ValueError):
            continue
        for r in remaining:
            key = _norm(r)
            if key in table:
                found[r] = table[key]
    return found


def importance_by_region(
    names: list[str],
    weights: np.ndarray,
) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
    """Sum absolute weights per region; connectivity features also give edges."""
    node: dict[str, float] = {}
    edges: list[tuple[str, str, float]] = []
    for n, w in zip(names, weights, strict=True):
        regions = feature_regions(n)
        for r in regions:
            node[r] = node.get(r, 0.0) + float(abs(w))
        if len(regions) == 2:
            edges.append((regions[0], regions[1], float(w)))
    return node, edges
