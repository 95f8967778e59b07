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


#: Feature-kind prefixes (``kind__region[__region]``) and how a clinician reads them.
KINDS = {
    "conn": "connectivity",
    "tconn": "connectivity (tangent)",
    "pconn": "partial-correlation connectivity",
    "activity": "activity",
    "amp": "ALFF",
    "falff": "fALFF",
    "vol": "volume",
    "thick": "cortical thickness",
    "area": "surface area",
    "noise": "noise feature",
}
#: Desikan-Killiany names written as one word in FreeSurfer labels.
_DK = {
    "bankssts": "banks of the superior temporal sulcus",
    "caudalanteriorcingulate": "caudal anterior cingulate",
    "caudalmiddlefrontal": "caudal middle frontal",
    "cuneus": "cuneus",
    "entorhinal": "entorhinal",
    "fusiform": "fusiform",
    "inferiorparietal": "inferior parietal",
    "inferiortemporal": "inferior temporal",
    "isthmuscingulate": "isthmus cingulate",
    "lateraloccipital": "lateral occipital",
    "lateralorbitofrontal": "lateral orbitofrontal",
    "lingual": "lingual",
    "medialorbitofrontal": "medial orbitofrontal",
    "middletemporal": "middle temporal",
    "parahippocampal": "parahippocampal",
    "paracentral": "paracentral",
    "parsopercularis": "pars opercularis",
    "parsorbitalis": "pars orbitalis",
    "parstriangularis": "pars triangularis",
    "pericalcarine": "pericalcarine",
    "postcentral": "postcentral",
    "posteriorcingulate": "posterior cingulate",
    "precentral": "precentral",
    "precuneus": "precuneus",
    "rostralanteriorcingulate": "rostral anterior cingulate",
    "rostralmiddlefrontal": "rostral middle frontal",
    "superiorfrontal": "superior frontal",
    "superiorparietal": "superior parietal",
    "superiortemporal": "superior temporal",
    "supramarginal": "supramarginal",
    "frontalpole": "frontal pole",
    "temporalpole": "temporal pole",
    "transversetemporal": "transverse temporal",
    "insula": "insula",
    "thalamusproper": "thalamus",
    "ventraldc": "ventral diencephalon",
}
_SIDES = {"lh": "left", "rh": "right", "left": "left", "right": "right", "l": "left", "r": "right"}
#: Abbreviations inside region and measure names.
_WORDS = {
    "wm": "white matter",
    "etiv": "estimated total intracranial volume",
    "ml": "(ml)",
}
#: ``ctx__<hemi>_<region>_<measure>`` (ENIGMA cortical protocol, ``features/modalities/
#: anat.py``) and the hemisphere summaries ``ctx__LThickness`` ...
_CTX_MEASURES = {
    "thickavg": "cortical thickness",
    "surfavg": "surface area (per eTIV)",
    "grayvol": "grey-matter volume (per eTIV)",
}
_CTX_HEMI = re.compile(r"^(L|R)(Thickness|SurfArea)$")
#: Diffusion-tensor scalars of ``dti__<scalar>__<region>``.
_DTI = {
    "fa": "fractional anisotropy",
    "md": "mean diffusivity",
    "ad": "axial diffusivity",
    "rd": "radial diffusivity",
}


def readable_region(part: str) -> str:
    """``ctx_lh_rostralanteriorcingulate`` -> ``left rostral anterior cingulate``."""
    tokens = [tok for tok in re.split(r"[-_\s]+", part) if tok]
    if tokens and tokens[0].lower() == "ctx":
        tokens = tokens[1:]
    side = ""
    if tokens and tokens[0].lower() in _SIDES:
        side = _SIDES[tokens[0].lower()]
        tokens = tokens[1:]
    elif tokens and tokens[-1].lower() in ("l", "r", "lh", "rh", "left", "right"):
        side = _SIDES[tokens[-1].lower()]
        tokens = tokens[:-1]
    words = []
    for tok in tokens:
        low = tok.lower()
        # acronyms (sgACC, dlPFC, ACC) keep their case; Capitalised words are lowered
        plain = tok[1:] == tok[1:].lower()
        words.append(_DK.get(low, _WORDS.get(low, low if plain else tok)))
    text = " ".join(words) or part
    return f"{side} {text}".strip()


def _cortical(part: str) -> str:
    """``L_insula_thickavg`` -> ``cortical thickness: left insula``."""
    hemi = _CTX_HEMI.match(part)
    if hemi:
        side = "left" if hemi.group(1) == "L" else "right"
        what = (
            "mean cortical thickness"
            if hemi.group(2) == "Thickness"
            else "total surface area (per eTIV)"
        )
        return f"{what}: {side} hemisphere"
    stem, _, measure = part.rpartition("_")
    if measure.lower() in _CTX_MEASURES and stem:
        return f"{_CTX_MEASURES[measure.lower()]}: {readable_region(stem)}"
    return f"cortex: {readable_region(part)}"


def readable_feature_name(name: str) -> str:
    """A feature column as a clinician reads it.

    ``conn__ctx_lh_insula__ctx_lh_rostralanteriorcingulate`` ->
    ``connectivity: left insula - left rostral anterior cingulate``; names without a
    known kind prefix are returned with their separators made readable.
    """
    parts = [p for p in name.split("__") if p]
    kind = parts[0].lower() if parts else ""
    if kind == "ctx" and len(parts) == 2:
        return _cortical(parts[1])
    if kind == "dti" and len(parts) >= 3:
        scalar = _DTI.get(parts[1].lower(), parts[1])
        return f"DTI {scalar}: " + " - ".join(readable_region(p) for p in parts[2:])
    if kind == "task" and len(parts) >= 4:
        contrast = " - ".join(p for p in re.split(r"-", parts[2]) if p)
        regions = " - ".join(readable_region(p) for p in parts[3:])
        return f"task {parts[1]!r}, contrast {contrast}: {regions}"
    if len(parts) >= 2 and parts[0].lower() in KINDS:
        kind = KINDS[parts[0].lower()]
        if parts[0].lower() == "noise":
            return f"{kind} {' '.join(parts[1:])}"
        return f"{kind}: " + " - ".join(readable_region(p) for p in parts[1:])
    return " - ".join(readable_region(p) for p in parts) if parts else name
