"""The C region-sum kernel: same sums as the numpy path, safe on any input, built."""

from __future__ import annotations

import gzip
import shutil
import sysconfig
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.features import regions
from brainmatch.features.niftistream import NiftiStream
from brainmatch.features.regions import RegionPlan


def _image(tmp_path: Path, dtype: str, shape: tuple[int, ...], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.normal(1000.0, 50.0, size=shape)
    if np.dtype(dtype).kind in "iu":
        data = np.clip(data / 10, 0, 120)
    data = data.astype(dtype)
    img = nib.Nifti1Image(data, np.eye(4))
    if dtype.startswith(">"):  # a big-endian file
        img = nib.Nifti1Image(data, np.eye(4), header=img.header.as_byteswapped(">"))
    img.header.set_data_dtype(dtype)
    path = tmp_path / f"bold_{np.dtype(dtype).str.replace('<', 'le').replace('>', 'be')}.nii.gz"
    nib.save(img, path)
    return path


def _labels(shape: tuple[int, int, int], seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Blocky labels (runs of every length, some longer than 16) and a brain mask."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, dtype=np.int32)
    for value in range(1, 9):
        x0, y0, z0 = (int(rng.integers(0, s)) for s in shape)
        lab[x0 : x0 + int(rng.integers(1, 30)), y0 : y0 + 4, z0 : z0 + 3] = value
    lab[-3:, -1, -1] = 3  # a run that ends at the last voxel of the volume
    mask = np.zeros(shape, dtype=bool)
    mask[2:-2, 1:-1, :] = True
    return lab, mask


def _numpy_sums(plan: RegionPlan, path: Path) -> np.ndarray:
    kernel = regions._regionsum
    regions._regionsum = None  # type: ignore[assignment]
    try:
        return plan.extract(path).signals
    finally:
        regions._regionsum = kernel


def _direct(path: Path, lab: np.ndarray, values: list[int]) -> np.ndarray:
    """Region means straight from nibabel, in float64."""
    data = np.asarray(nib.load(path).get_fdata(), dtype=np.float64)
    return np.stack([data[lab == v].mean(axis=0) for v in values], axis=1)


@pytest.mark.skipif(regions._regionsum is None, reason="the C kernel is not built")
@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", "<i2", ">i2", "<u1"])
@pytest.mark.parametrize("piece", [37, 256, 1 << 15])
def test_kernel_equals_numpy_path_and_nibabel(tmp_path: Path, dtype: str, piece: int) -> None:
    shape = (40, 11, 7)
    path = _image(tmp_path, dtype, (*shape, 9))
    lab, mask = _labels(shape)
    values = list(range(1, 9))
    plan = RegionPlan(lab, values, mask, piece_voxels=piece)
    with NiftiStream(path) as stream:
        assert stream.dtype.str == np.dtype(dtype).str  # the byte order is the file's
    ours = plan.extract(path).signals
    np.testing.assert_allclose(ours, _numpy_sums(plan, path), rtol=1e-6, atol=0)
    np.testing.assert_allclose(ours, _direct(path, lab, plan.labels), rtol=1e-6, atol=0)


@pytest.mark.skipif(regions._regionsum is None, reason="the C kernel is not built")
@pytest.mark.parametrize("piece", [64, 1 << 15])
def test_nan_in_the_mask_outside_the_atlas_is_found_and_outside_the_mask_ignored(
    tmp_path: Path, piece: int
) -> None:
    shape = (30, 9, 6)
    lab, mask = _labels(shape)
    rng = np.random.default_rng(5)
    data = rng.normal(1000.0, 50.0, size=(*shape, 6)).astype(np.float32)
    outside_mask = np.argwhere(~mask)[0]
    data[tuple(outside_mask)][2] = np.nan
    plan = RegionPlan(lab, list(range(1, 9)), mask, piece_voxels=piece)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), good)
    assert np.isfinite(plan.extract(good).signals).all()

    in_mask_only = np.argwhere(mask & (lab == 0))[-1]
    data[tuple(in_mask_only)][4] = np.inf
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), bad)
    with pytest.raises(BrainmatchInputError, match=r"NaN or infinite .* volume 5"):
        plan.extract(bad)


@pytest.mark.skipif(regions._regionsum is None, reason="the C kernel is not built")
def test_file_that_ends_inside_a_piece_names_the_volume(tmp_path: Path) -> None:
    shape = (40, 11, 7)
    path = _image(tmp_path, "<f4", (*shape, 5))
    raw = gzip.decompress(path.read_bytes())
    cut = tmp_path / "cut.nii"
    vol = 40 * 11 * 7 * 4
    cut.write_bytes(raw[: 352 + 3 * vol + 1000])  # 3 volumes and part of a piece
    lab, mask = _labels(shape)
    plan = RegionPlan(lab, list(range(1, 9)), mask, piece_voxels=256)
    with pytest.raises(BrainmatchInputError, match="data stops in volume 4"):
        plan.extract(cut)
    cutgz = tmp_path / "cut.nii.gz"
    cutgz.write_bytes(gzip.compress(raw[: 352 + 3 * vol + 1000]))
    with pytest.raises(BrainmatchInputError, match="data stops in volume 4"):
        plan.extract(cutgz)


@pytest.mark.skipif(regions._regionsum is None, reason="the C kernel is not built")
def test_kernel_is_memory_safe_on_bad_runs() -> None:
    k = regions._regionsum
    assert k is not None
    vol = np.arange(20, dtype=np.float32)
    out = np.zeros(2)
    starts = np.array([0, 18, -5, 2**30, 3], dtype=np.int32)
    lengths = np.array([3, 16, 4, 4, 200], dtype=np.uint8)
    columns = np.array([0, 1, 0, 1, 9], dtype=np.uint16)
    k.run_sums(vol, starts, lengths, columns, 0, 5, out)
    # valid: run 0 (0+1+2) and run 1 clipped at the volume's end (18+19); the rest is
    # clipped or dropped (the column 9 run lands in the spare slot)
    assert out.tolist() == [3.0, 37.0]
    with pytest.raises(ValueError):
        k.run_sums(vol, starts, lengths[:2], columns, 0, 5, out)
    with pytest.raises(ValueError):
        k.run_sums(vol, starts, lengths, columns, 0, 6, out)
    with pytest.raises(ValueError, match="out of range"):
        k.region_sums(vol, "f", np.array([25], np.int32), np.array([0], np.uint16), 0, 1, out)


def test_kernel_is_built_where_a_compiler_is() -> None:
    """setup.py builds it (optional); a silent fallback would make extraction ~25% slower."""
    if shutil.which(sysconfig.get_config_var("CC").split()[0]) is None:
        pytest.skip("no C compiler here: brainmatch uses its numpy path")
    assert regions._regionsum is not None, "brainmatch.features._regionsum was not built"


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_hash_while_streaming_equals_hash_of_the_file(tmp_path: Path, ext: str) -> None:
    import hashlib

    shape = (40, 11, 7)
    gz = _image(tmp_path, "<f4", (*shape, 5))
    path = gz
    if ext == ".nii":
        path = tmp_path / "bold.nii"
        path.write_bytes(gzip.decompress(gz.read_bytes()))
    lab, mask = _labels(shape)
    h = hashlib.blake2b(digest_size=32)
    sig = RegionPlan(lab, list(range(1, 9)), mask, piece_voxels=256).extract(path, hasher=h)
    assert h.hexdigest() == hashlib.blake2b(path.read_bytes(), digest_size=32).hexdigest()
    np.testing.assert_allclose(sig.signals, _direct(path, lab, sig.labels), rtol=1e-6)


def test_plan_is_the_same_for_any_label_dtype_and_stray_values(tmp_path: Path) -> None:
    shape = (40, 11, 7)
    lab, mask = _labels(shape)
    lab[0, :, 0] = 99  # a label the table does not list: ignored
    path = _image(tmp_path, "<f4", (*shape, 4))
    values = [2, 1, 3, 4, 5, 6, 7, 8, 50]  # unsorted; 50 is absent from the image
    ref = RegionPlan(lab, values, mask)
    assert ref.labels == [1, 2, 3, 4, 5, 6, 7, 8]
    for variant in (lab.astype(np.float32), lab.astype(np.int64) - 1000 * (lab == 99)):
        plan = RegionPlan(variant, values, mask)  # float (searched) / negative (not a lookup)
        assert plan.labels == ref.labels
        np.testing.assert_array_equal(plan.index, ref.index)
        np.testing.assert_array_equal(plan.voxels, ref.voxels)
        np.testing.assert_array_equal(plan.columns, ref.columns)
        np.testing.assert_array_equal(plan.extract(path).signals, ref.extract(path).signals)


@pytest.mark.parametrize("block", [1, 2, 3, 7])
def test_constant_voxels_found_in_any_block_size(block: int) -> None:
    rng = np.random.default_rng(7)
    n, t = 500, 7
    data = rng.normal(size=(t, n)).astype(np.float32)
    mask = np.arange(0, n, 2)
    data[:, 10] = 3.0  # constant in the mask
    data[:, 11] = 3.0  # constant outside the mask: not reported
    data[: t - 1, 20] = 5.0  # equal until the last volume: not constant
    data[:2, 30] = 1.0  # equal in the first two volumes only
    check = regions._ConstantCheck(mask)
    for start in range(0, t, block):
        if block == 1:
            check.update_volume(data[start])
        else:
            check.update(data[start : start + block])
    assert check.constant().tolist() == [10]
    assert regions._ConstantCheck(mask).constant().size == 0  # nothing seen yet
