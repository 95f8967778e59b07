"""Feature names -> atlas regions, circuits (the affect network) and region maps.

``brainmatch extract`` names features ``<measure>__<region>`` (``amp``, ``falff``, ``vol``)
or ``<measure>__<region>__<region>`` (``conn``, ``pconn``, ``tconn``), where ``<region>`` is
the atlas label with every run of non-alphanumeric characters turned into ``_``.  This
module maps them back to the atlas's own names, decides which regions of any atlas belong
to the affect network (by voxel overlap with the ``affect`` preset, the regions the seeds
name, built from Harvard-Oxford), and paints region values into the atlas image for
glass-brain figures.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd

from brainmatch.atlases import AFFECT_REGIONS, Atlas, load_atlas, resample_labels

#: Feature prefixes that describe one region.
REGION_MEASURES = ("amp", "falff", "vol")
#: Feature prefixes that describe a pair of regions.
EDGE_MEASURES = ("conn", "pconn", "tconn")

#: Circuits defined on the affect preset: the whole network and its two parts named by the
#: seeds ("therapy strengthens top-down control and calms reactive circuits").
CIRCUITS: dict[str, tuple[str, ...]] = {
    "affect network": tuple(r.name for r in AFFECT_REGIONS),
    "affect: prefrontal control": tuple(
        r.name
        for r in AFFECT_REGIONS
        if r.name.split("_")[0] in ("mpfc", "ofc", "dlpfc", "acc", "subcallosal")
    ),
    "affect: limbic reactivity": tuple(
        r.name
        for r in AFFECT_REGIONS
        if r.name.rsplit("_", 1)[0] in ("amygdala", "hippocampus", "anterior_insula", "accumbens")
    ),
}

#: A region of another atlas belongs to a circuit when at least this share of its voxels
#: lies inside the circuit's affect-preset regions (0.4 keeps Desikan-Killiany's insula,
#: of which the preset holds the anterior half, and drops parts of neighbouring gyri).
OVERLAP_THRESHOLD = 0.4
#: Labels that are not grey matter never join a circuit (ventricles, white matter, ...).
NOT_GREY = re.compile(
    r"vent|unknown|choroid|white|^wm|csf|vessel|cc_|corpus.callosum|optic|hypointens",
    re.IGNORECASE,
)


def feature_name(region: str) -> str:
    """A region name as it appears in feature column names (as ``brainmatch extract``)."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]+", "_", region)).strip("_")


@dataclass(frozen=True)
class FeatureInfo:
    """What a feature column describes."""

    feature: str
    measure: str
    region: str
    region_2: str


def describe_features(features: list[str], atlas: Atlas | None) -> pd.DataFrame:
    """Measure and atlas region name(s) of each feature column.

    Returns
    -------
    DataFrame
        Columns ``feature``, ``measure``, ``region``, ``region_2`` (empty unless an edge).
        Regions are the atlas's own names when ``atlas`` is known, else the name fragment.
    """
    names: dict[str, str] = {}
    if atlas is not None:
        names = {feature_name(str(n)): str(n) for n in atlas.labels["name"]}
    rows = []
    for f in features:
        parts = f.split("__")
        measure = parts[0] if len(parts) > 1 else "other"
        if measure in EDGE_MEASURES and len(parts) == 3:
            r1, r2 = names.get(parts[1], parts[1]), names.get(parts[2], parts[2])
        elif len(parts) == 2:
            r1, r2 = names.get(parts[1], parts[1]), ""
        else:
            r1, r2 = "", ""
        rows.append({"feature": f, "measure": measure, "region": r1, "region_2": r2})
    return pd.DataFrame(rows, columns=["feature", "measure", "region", "region_2"])


def atlas_for(metadata: dict[str, object], override: str | None = None) -> Atlas | None:
    """The atlas a feature table was extracted with (from ``features.json``), if loadable."""
    source = override
    labels = None
    if source is None:
        options = metadata.get("options") if isinstance(metadata, dict) else None
        if isinstance(options, dict) and options.get("atlas"):
            source = str(options["atlas"])
            labels = options.get("atlas_labels")
        else:
            described = metadata.get("atlas")
            if isinstance(described, dict) and described.get("name"):
                source = str(described["name"])
    if not source:
        return None
    try:
        return load_atlas(source, str(labels) if labels else None)
    except Exception:
        if override is not None:
            raise
        return None


@functools.lru_cache(maxsize=4)
def _affect_on(shape: tuple[int, int, int], affine_bytes: bytes) -> np.ndarray:
    from brainmatch.atlases import affect_atlas

    affine = np.frombuffer(affine_bytes, dtype=np.float64).reshape(4, 4)
    img = resample_labels(affect_atlas().image, shape, affine)
    return np.asarray(img.dataobj).astype(np.int32)


def circuit_membership(atlas: Atlas | None, regions: list[str]) -> dict[str, list[str]]:
    """Which of ``regions`` (atlas names) belong to each circuit of :data:`CIRCUITS`.

    For the ``affect`` preset itself membership is by name; for any other atlas a region
    belongs to a circuit when at least :data:`OVERLAP_THRESHOLD` of its voxels fall inside
    the circuit's preset regions (resampled to the atlas grid).
    """
    out: dict[str, list[str]] = {}
    if atlas is None:
        return out
    if atlas.name == "affect":
        for circuit, members in CIRCUITS.items():
            out[circuit] = [r for r in regions if r in members]
        return {k: v for k, v in out.items() if v}
    data = np.asarray(atlas.image.dataobj).astype(np.int32)
    affine = np.asarray(atlas.image.affine, dtype=np.float64)
    shape = (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))
    affect = _affect_on(shape, affine.tobytes())
    value_of = dict(
        zip(atlas.labels["name"].astype(str), atlas.labels["index"].astype(int), strict=False)
    )
    preset_value = {r.name: i for i, r in enumerate(AFFECT_REGIONS, start=1)}
    wanted = set(regions)
    for circuit, members in CIRCUITS.items():
        inside = np.isin(affect, [preset_value[m] for m in members])
        keep = []
        for name, value in value_of.items():
            if name not in wanted or NOT_GREY.search(name):
                continue
            vox = data == value
            n = int(vox.sum())
            if n and (inside & vox).sum() / n >= OVERLAP_THRESHOLD:
                keep.append(name)
        if keep:
            out[circuit] = keep
    return out


def region_map(atlas: Atlas, values: dict[str, float]) -> nib.Nifti1Image:
    """Paint ``{region name: value}`` into the atlas image (other voxels 0)."""
    data = np.asarray(atlas.image.dataobj).astype(np.int32)
    out = np.zeros(data.shape, dtype=np.float32)
    lut = dict(
        zip(atlas.labels["name"].astype(str), atlas.labels["index"].astype(int), strict=False)
    )
    for name, v in values.items():
        if name in lut and np.isfinite(v):
            out[data == lut[name]] = v
    return nib.Nifti1Image(out, atlas.image.affine)
