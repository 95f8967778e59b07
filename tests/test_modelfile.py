"""Model files: keyed signatures, refusal of forged / crafted / damaged files, plausibility.

Reference: the attacks of issue 12 (coefficients scaled by -50 with the SHA-256
recomputed; crafted format_version, nested JSON, gigabyte members, corrupt deflate) and
Python's own ``hmac`` (the signature must verify with the key and only with it).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import stat
import struct
import warnings
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from brainmatch import __version__
from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.selection import modelfile as mf
from brainmatch.selection import recommend, train
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.validation.synthetic import measured_features, outcome_table

CLIN = ["participant_id", "site", "age", "sex", "hamd_baseline"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    trial = draw_trial(TrialSpec(n_subjects=120, n_sites=2, effect_size=1.2, seed=5))
    f = measured_features(trial, n_noise=5, reliability=0.9, seed=5)
    o = outcome_table(trial)
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        covariates=("age", "sex"),
        out_dir=out,
        n_repeats=1,
        n_permutations=19,
        n_boot=50,
        learning_curve=False,
    )
    new = f.merge(o[CLIN]).head(3)
    new_path = out.parent / "new.csv"
    new.to_csv(new_path, index=False)
    return res.model_path, new, new_path


def _raw(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    return arrays, meta


def _write(dst, arrays, meta_text):
    buf = io.BytesIO()
    blob = np.frombuffer(meta_text.encode(), dtype=np.uint8)
    np.savez_compressed(buf, **arrays, __meta__=blob)
    dst.write_bytes(buf.getvalue())


def _forge(src, dst, change_arrays=None, change_meta=None, sign_with=None, drop_sig=False):
    """Edit a model the way an attacker without the key can: recompute the public hash."""
    arrays, meta = _raw(src)
    if change_arrays:
        change_arrays(arrays)
    if change_meta:
        change_meta(meta)
    if drop_sig:
        meta.pop("signature", None)
    if sign_with is not None:
        meta["signature"] = {
            "scheme": "HMAC-SHA256",
            "key_id": mf.key_id(sign_with),
            "mac": mf._mac(sign_with, arrays, meta),
        }
    meta["content_sha256"] = mf._content_hash(arrays, meta)
    _write(dst, arrays, json.dumps(meta))
    return dst


def _key(key_file):
    return key_file.read_bytes().strip()


def test_signed_model_loads_and_signature_is_a_real_hmac(model, _model_key):
    path, _, _ = model
    arrays, meta = mf.load_model(path)
    key = _key(_model_key)
    sig = meta["signature"]
    assert sig["scheme"] == "HMAC-SHA256" and sig["key_id"] == mf.key_id(key)
    # independent recomputation with the standard library
    mac = hmac.new(key, digestmod=hashlib.sha256)
    body = {k: v for k, v in meta.items() if k not in ("content_sha256", "signature")}
    mac.update(json.dumps(body, sort_keys=True, allow_nan=False).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        mac.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        mac.update(a.tobytes())
    assert sig["mac"] == mac.hexdigest()
    assert oct(stat.S_IMODE(_model_key.stat().st_mode)) == "0o600"


def test_forged_coefficients_with_recomputed_hash_are_refused(model, tmp_path):
    path, new, new_path = model

    def scale(a):
        a["coef"] = a["coef"] * -50
        a["boot_coef"] = a["boot_coef"] * -50

    forged = _forge(path, tmp_path / "forged.npz", change_arrays=scale)
    with pytest.raises(BrainmatchInputError, match="signature does not match its content"):
        mf.load_model(forged)
    r = CliRunner().invoke(
        app, ["recommend", str(forged), str(new_path), "-o", str(tmp_path / "r")]
    )
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "signature does not match" in r.output
    assert not (tmp_path / "r" / "recommend.json").exists()
    # trusted anyway, its far-off predictions are flagged on every patient, and the
    # intervals stay ordered
    with pytest.warns(mf.UntrustedModelWarning):
        rec = recommend(forged, new, None, trust_model=True)
    for p in rec.patients:
        assert any(c.startswith("implausible prediction") for c in p["caveats"]), p["caveats"]
        for q in p["predicted"].values():
            assert q["interval"][0] <= q["interval"][1]


def test_unsigned_and_foreign_key_need_explicit_trust(model, tmp_path, monkeypatch):
    path, _new, new_path = model
    unsigned = _forge(path, tmp_path / "unsigned.npz", drop_sig=True)
    with pytest.raises(BrainmatchInputError, match="not signed; refusing"):
        mf.load_model(unsigned)
    with pytest.warns(mf.UntrustedModelWarning, match="not signed"):
        mf.load_model(unsigned, trust=True)
    r = CliRunner().invoke(
        app,
        ["recommend", str(unsigned), str(new_path), "-o", str(tmp_path / "r"), "--trust-unsigned"],
    )
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "not signed" in r.output
    foreign = _forge(path, tmp_path / "foreign.npz", sign_with=b"another site's key 0123456789")
    with pytest.raises(BrainmatchInputError, match="signed with another key"):
        mf.load_model(foreign)
    # the same file verifies with the key it was signed with (environment variable)
    monkeypatch.setenv("BRAINMATCH_MODEL_KEY", "another site's key 0123456789")
    assert mf.load_model(foreign)[1]["arms"]
    with pytest.raises(BrainmatchInputError, match="signed with another key"):
        mf.load_model(path)
    monkeypatch.setenv("BRAINMATCH_MODEL_KEY", "short")
    with pytest.raises(BrainmatchInputError, match="at least 16"):
        mf.load_model(path)
    monkeypatch.delenv("BRAINMATCH_MODEL_KEY")
    monkeypatch.setenv("BRAINMATCH_MODEL_KEY_FILE", str(tmp_path / "absent.key"))
    with pytest.raises(BrainmatchInputError, match="no model key is configured"):
        mf.load_model(path)


def test_world_writable_key_file_is_refused(model, tmp_path, monkeypatch):
    key = tmp_path / "k"
    key.write_text("x" * 40)
    os.chmod(key, 0o666)
    monkeypatch.setenv("BRAINMATCH_MODEL_KEY_FILE", str(key))
    with pytest.raises(BrainmatchInputError, match="writable by every user"):
        mf.load_model(model[0])


def test_key_file_created_on_first_save(tmp_path, monkeypatch):
    monkeypatch.delenv("BRAINMATCH_MODEL_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert mf.resolve_key() is None
    key, source = mf.resolve_key(create=True)
    assert source == str(tmp_path / "cfg" / "brainmatch" / "model.key") and len(key) == 64
    assert mf.resolve_key() == (key, source)


@pytest.mark.parametrize(
    ("meta_text", "message"),
    [
        ('{"format": "brainmatch-selection-model", "format_version": "one"}', "not an integer"),
        ('{"format": "brainmatch-selection-model", "format_version": 1e999}', "not an integer"),
        ("[" * 100_000 + "]" * 100_000, "corrupt"),
        (
            '{"format": "brainmatch-selection-model", "format_version": 1, '
            '"brainmatch_version": "banana"}',
            "not a version",
        ),
        (
            '{"format": "brainmatch-selection-model", "format_version": 7, '
            '"brainmatch_version": "0.1.0"}',
            "newer brainmatch",
        ),
        ("\xff not json", "corrupt"),
    ],
)
def test_crafted_metadata_is_refused(model, tmp_path, meta_text, message):
    arrays, _ = _raw(model[0])
    bad = tmp_path / "bad.npz"
    _write(bad, arrays, meta_text)
    with pytest.raises(BrainmatchInputError, match=message):
        mf.load_model(bad)
    r = CliRunner().invoke(app, ["recommend", str(bad), str(model[2]), "-o", str(tmp_path / "r")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1


def test_development_version_of_this_release_is_not_newer(model, tmp_path, _model_key):
    key = _key(_model_key)
    major, minor, patch = (int(x) for x in __version__.split(".")[:3])

    def dev(version):
        def change(m):
            m["brainmatch_version"] = version

        return change

    same = _forge(
        model[0], tmp_path / "dev.npz", change_meta=dev(f"{__version__}.dev3"), sign_with=key
    )
    assert mf.load_model(same)[1]["brainmatch_version"].endswith(".dev3")
    nxt = _forge(
        model[0],
        tmp_path / "next.npz",
        change_meta=dev(f"{major}.{minor}.{patch + 1}.dev1"),
        sign_with=key,
    )
    with pytest.raises(BrainmatchInputError, match="newer brainmatch"):
        mf.load_model(nxt)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.__setitem__("coef", np.full_like(a["coef"], np.nan)), "NaN or infinite"),
        (lambda a: a.__setitem__("coef", a["coef"][:, :-1]), "'coef' has shape"),
        (lambda a: a.__setitem__("boot_coef", a["boot_coef"][:, :1]), "'boot_coef' has shape"),
        (lambda a: a.__setitem__("sd", -a["sd"]), "not positive"),
        (lambda a: a.pop("intercept"), "'intercept' is missing"),
    ],
)
def test_implausible_content_is_refused_even_when_signed(
    model, tmp_path, _model_key, change, message
):
    bad = _forge(model[0], tmp_path / "bad.npz", change_arrays=change, sign_with=_key(_model_key))
    with pytest.raises(BrainmatchInputError, match=message):
        mf.load_model(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.__setitem__("outcome_range", [30.0, 2.0]), "outcome range"),
        (lambda m: m.__setitem__("arms", ["CBT"]), "'arms'"),
        (lambda m: m["conformal"]["half_width"].__setitem__("CBT", -3.0), "half-widths"),
        (lambda m: m.__setitem__("better", "sideways"), "'better'"),
        (lambda m: m.pop("options"), "outcome column"),
        (lambda m: m.__setitem__("covariate_spec", [{"kind": "numeric"}]), "has no name"),
        (lambda m: m.__setitem__("n_outcome_only", -1), "n_outcome_only"),
        (lambda m: m.__setitem__("ood", {"p99": "x"}), "'ood'"),
        (lambda m: m.__setitem__("sites", []), "lists none"),
    ],
)
def test_implausible_metadata_is_refused(model, tmp_path, _model_key, change, message):
    bad = _forge(model[0], tmp_path / "bad.npz", change_meta=change, sign_with=_key(_model_key))
    with pytest.raises(BrainmatchInputError, match=message):
        mf.load_model(bad)


def test_member_declaring_gigabytes_is_refused_before_reading(model, tmp_path):
    data = bytearray(model[0].read_bytes())
    # patch the central directory's uncompressed size of the first member to ~4 GB
    cd = data.find(b"PK\x01\x02")
    data[cd + 24 : cd + 28] = struct.pack("<I", 0xFFFFFF00)
    bad = tmp_path / "huge.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(BrainmatchInputError, match=r"declares \d+ MB"):
        mf.load_model(bad)


def test_npy_header_declaring_a_huge_shape_is_refused(model, tmp_path):
    _arrays, _meta = _raw(model[0])
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    buf.write(b"\0" * 64)
    bad = tmp_path / "shape.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("coef.npy", buf.getvalue())
        z.writestr("__meta__.npy", b"")
    with pytest.raises(BrainmatchInputError, match="declares shape"):
        mf.load_model(bad)


def test_corrupted_deflate_stream_is_refused(model, tmp_path):
    data = bytearray(model[0].read_bytes())
    # overwrite the start of the first member's compressed data (after its local header)
    name_len, extra_len = struct.unpack("<HH", data[26:30])
    start = 30 + name_len + extra_len
    data[start : start + 16] = b"\xff" * 16
    bad = tmp_path / "deflate.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(BrainmatchInputError, match=r"damaged|not a brainmatch model"):
        mf.load_model(bad)


def test_prediction_plausibility_helpers():
    meta = {"outcome_range": [2.0, 30.0], "arms": ["CBT", "SSRI"]}
    assert mf.prediction_interval(-38.0, 7.0, meta) == [2.0, 2.0]
    assert mf.prediction_interval(10.0, 7.0, meta) == [3.0, 17.0]
    lo, hi = mf.prediction_interval(40.0, 3.0, meta)
    assert lo <= hi
    caveats = mf.check_predictions(np.array([[10.0, 12.0], [10.0, -38.0]]), meta, ["a", "b"], "m")
    assert caveats[0] == []
    assert caveats[1][0].startswith("implausible prediction: -38 under SSRI lies outside")
    with pytest.raises(BrainmatchInputError, match="implausible prediction for sub-1"):
        mf.check_predictions(np.array([[np.nan, 1.0]]), meta, ["sub-1"], "m")


def test_untrusted_warning_is_not_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.warn("x", mf.UntrustedModelWarning, stacklevel=1)
    assert caught and issubclass(caught[0].category, UserWarning)
