"""The model file: NPZ arrays + JSON metadata, signed, loaded without executing any code.

Threat model
------------
A model file decides which treatment a patient is recommended, so a file that was edited
(by mistake or on purpose) must not load silently.  Every file carries

* a SHA-256 over its content (detects accidental damage), and
* an HMAC-SHA256 signature with a secret key the user or site controls (detects
  deliberate edits: without the key, nobody can produce a valid signature, whereas a
  plain hash anyone can recompute).

The key comes from ``BRAINMATCH_MODEL_KEY`` (the key text itself), else from the file
named by ``BRAINMATCH_MODEL_KEY_FILE``, else from the per-user key file
``$XDG_CONFIG_HOME/brainmatch/model.key`` (``~/.config/brainmatch/model.key``), which
:func:`save_model` creates (mode 0600) on first use.  A site shares one key among the
machines that train and recommend.  Unsigned files, or files signed with another key, are
refused unless the caller explicitly trusts the file (``trust=True``, CLI
``--trust-unsigned``), which emits a warning.

Loading never executes code (members are parsed as plain ``.npy`` numeric arrays, never
unpickled) and never trusts sizes: member sizes are checked from the zip directory before
anything is decompressed, the ``.npy`` header's shape must match the bytes present, the
metadata must be small, shallow JSON.  After loading, :func:`check_model` verifies shapes
and finiteness, and :func:`check_predictions` verifies every prediction against the
outcome range seen in training.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import os
import secrets
import stat
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch import __version__
from brainmatch._io import write_bytes
from brainmatch.errors import BrainmatchInputError

FORMAT = "brainmatch-selection-model"
FORMAT_VERSION = 1
_META = "__meta__"

KEY_ENV = "BRAINMATCH_MODEL_KEY"
KEY_FILE_ENV = "BRAINMATCH_MODEL_KEY_FILE"
SIGNATURE_SCHEME = "HMAC-SHA256"

#: Refusal limits (a real model is a few MB: 200 bootstrap refits x arms x features).
MAX_MEMBERS = 64
MAX_MEMBER_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 512 * 2**20
MAX_META_BYTES = 16 * 2**20
_ALLOWED_KINDS = "fiub"


class UntrustedModelWarning(UserWarning):
    """A model file was loaded without a valid signature because the caller trusted it."""


# --------------------------------------------------------------------------- keys


def default_key_file() -> Path:
    """The per-user key file: ``$XDG_CONFIG_HOME/brainmatch/model.key``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "brainmatch" / "model.key"


def _key_file() -> Path:
    return Path(os.environ[KEY_FILE_ENV]) if os.environ.get(KEY_FILE_ENV) else default_key_file()


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (safe to print; does not reveal the key)."""
    return hashlib.sha256(b"brainmatch-model-key-id\0" + key).hexdigest()[:16]


def _read_key_file(path: Path) -> bytes:
    try:
        st = path.stat()
        if st.st_mode & stat.S_IWOTH:
            raise BrainmatchInputError(
                "the model key file is writable by every user, so anyone could replace it; "
                "run chmod 600 on it",
                path,
            )
        key = path.read_bytes().strip()
    except OSError as exc:
        raise BrainmatchInputError(
            f"cannot read the model key file ({exc.strerror})", path
        ) from None
    if len(key) < 16:
        raise BrainmatchInputError("the model key file holds fewer than 16 characters", path)
    return key


def resolve_key(create: bool = False) -> tuple[bytes, str] | None:
    """The signing key and where it came from, or None when none is configured.

    Parameters
    ----------
    create : bool
        Create the key file (32 random bytes as hex, mode 0600) when no key is configured.

    Returns
    -------
    (key, source) or None
    """
    env = os.environ.get(KEY_ENV)
    if env:
        if len(env) < 16:
            raise BrainmatchInputError(f"{KEY_ENV} must hold at least 16 characters")
        return env.encode("utf-8"), f"${KEY_ENV}"
    path = _key_file()
    if path.is_file():
        return _read_key_file(path), str(path)
    if not create:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    except FileExistsError:  # created meanwhile by a concurrent run: use theirs
        pass
    except OSError as exc:
        raise BrainmatchInputError(
            f"cannot create the model key file ({exc.strerror}); set {KEY_ENV} or {KEY_FILE_ENV}",
            path,
        ) from None
    return _read_key_file(path), str(path)


# --------------------------------------------------------------------------- hashing


def _feed(update: Any, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> None:
    body = {k: v for k, v in meta.items() if k not in ("content_sha256", "signature")}
    update(json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        update(a.tobytes())


def _content_hash(arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    # files written before signatures existed hashed everything but content_sha256
    body = {k: v for k, v in meta.items() if k != "content_sha256"}
    digest.update(json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return "sha256:" + digest.hexdigest()


def _mac(key: bytes, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    _feed(mac.update, arrays, meta)
    return mac.hexdigest()


# --------------------------------------------------------------------------- writing


def save_model(
    path: str | Path,
    arrays: dict[str, NDArray[Any]],
    meta: dict[str, Any],
    *,
    key: bytes | None = None,
) -> Path:
    """Write arrays and metadata atomically to ``path`` (an ``.npz`` file), signed.

    Parameters
    ----------
    path : str or Path
        Destination.
    arrays : dict
        Numeric arrays.
    meta : dict
        JSON-serialisable metadata.
    key : bytes, optional
        Signing key; default: :func:`resolve_key` (creating the per-user key file on
        first use).

    Returns
    -------
    Path
    """
    clean = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in clean.items():
        if v.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"model array {k!r} has dtype {v.dtype} (numbers only)")
    if key is None:
        resolved = resolve_key(create=True)
        assert resolved is not None
        key = resolved[0]
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "brainmatch_version": __version__,
        **meta,
    }
    full["signature"] = {"scheme": SIGNATURE_SCHEME, "key_id": key_id(key), "mac": ""}
    full["signature"]["mac"] = _mac(key, clean, full)
    full["content_sha256"] = _content_hash(clean, {k: v for k, v in full.items()})
    buffer = io.BytesIO()
    blob = np.frombuffer(json.dumps(full, allow_nan=False).encode("utf-8"), dtype=np.uint8)
    members: dict[str, Any] = {**clean, _META: blob}
    np.savez_compressed(buffer, **members)
    write_bytes(path, buffer.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- reading


def _refuse(message: str, path: str | Path) -> BrainmatchInputError:
    return BrainmatchInputError(message, path)


def _parse_npy(data: bytes, name: str, path: Path) -> NDArray[Any]:
    fh = io.BytesIO(data)
    try:
        major, _minor = np.lib.format.read_magic(fh)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {major}")
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise _refuse(f"not a brainmatch model file (member {name!r}: {exc})", path) from None
    if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS:
        raise _refuse(
            f"not a brainmatch model file (member {name!r} has dtype {dtype}, not numbers)", path
        )
    count = math.prod(int(s) for s in shape)
    body = data[fh.tell() :]
    if count * dtype.itemsize != len(body):
        raise _refuse(
            f"the model file is damaged (member {name!r} declares shape {shape} but holds "
            f"{len(body)} bytes)",
            path,
        )
    arr = np.frombuffer(body, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def _read_members(path: Path) -> dict[str, NDArray[Any]]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise _refuse(f"not a brainmatch model file ({len(infos)} members)", path)
            total = 0
            for info in infos:
                if not info.filename.endswith(".npy") or "/" in info.filename:
                    raise _refuse(
                        f"not a brainmatch model file (unexpected member {info.filename!r})", path
                    )
                limit = MAX_META_BYTES if info.filename == f"{_META}.npy" else MAX_MEMBER_BYTES
                total += info.file_size
                if info.file_size > limit or total > MAX_TOTAL_BYTES:
                    raise _refuse(
                        f"refusing the model file: member {info.filename!r} declares "
                        f"{info.file_size / 2**20:.0f} MB (limit {limit / 2**20:.0f} MB per "
                        f"member, {MAX_TOTAL_BYTES / 2**20:.0f} MB in all)",
                        path,
                    )
            arrays: dict[str, NDArray[Any]] = {}
            for info in infos:
                with zf.open(info) as fh:
                    data = fh.read(info.file_size + 1)
                if len(data) != info.file_size:
                    raise _refuse(
                        f"the model file is damaged (member {info.filename!r} is not the size "
                        "its directory entry declares)",
                        path,
                    )
                name = info.filename[: -len(".npy")]
                arrays[name] = _parse_npy(data, name, path)
            return arrays
    except BrainmatchInputError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise _refuse(
            f"not a brainmatch model file, or a damaged one (cannot read it as NPZ: {exc})", path
        ) from None
    except (NotImplementedError, RuntimeError) as exc:  # unsupported compression, encrypted
        raise _refuse(f"not a brainmatch model file ({exc})", path) from None


def _is_newer(version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        mine = Version(__version__)
    except InvalidVersion:
        return False
    if mine.public == "0.0.0":  # running from a source tree without metadata
        return False
    # a development or local build of this very release is not "newer"
    return Version(version).release > mine.release


def _check_header(
    meta: Any, path: Path, fmt: str = FORMAT, what: str = "treatment-selection model"
) -> dict[str, Any]:
    from packaging.version import InvalidVersion, Version

    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise _refuse(f"not a brainmatch {what}", path)
    fv = meta.get("format_version")
    if isinstance(fv, bool) or not isinstance(fv, int):
        raise _refuse(f"the model's format_version {fv!r} is not an integer", path)
    version = meta.get("brainmatch_version")
    try:
        Version(str(version))
    except InvalidVersion:
        raise _refuse(
            f"the model's brainmatch_version {version!r} is not a version", path
        ) from None
    if fv > FORMAT_VERSION or _is_newer(str(version)):
        raise _refuse(
            f"the model was written by a newer brainmatch ({version}, model format {fv}) than "
            f"this one ({__version__}, format {FORMAT_VERSION}); upgrade brainmatch to use it",
            path,
        )
    if fv < 1:
        raise _refuse(f"the model's format_version {fv} is not a known format", path)
    return meta


def _verify_signature(
    arrays: dict[str, NDArray[Any]],
    meta: dict[str, Any],
    path: Path,
    trust: bool,
    key: bytes | None,
) -> None:
    source = "the key given"
    if key is None:
        resolved = resolve_key(create=False)
        if resolved is not None:
            key, source = resolved
    sig = meta.get("signature")
    problem = None
    if not isinstance(sig, dict) or sig.get("scheme") != SIGNATURE_SCHEME:
        problem = "the model file is not signed"
    elif key is None:
        problem = (
            f"no model key is configured to check the model's signature (set {KEY_ENV}, "
            f"{KEY_FILE_ENV}, or copy the training machine's key to {default_key_file()})"
        )
    elif sig.get("key_id") != key_id(key):
        problem = (
            f"the model was signed with another key (key id {sig.get('key_id')}; the key from "
            f"{source} has id {key_id(key)})"
        )
    elif not hmac.compare_digest(str(sig.get("mac", "")), _mac(key, arrays, meta)):
        problem = (
            "the model's signature does not match its content: the file was modified after it "
            "was signed (forged or damaged)"
        )
    if problem is None:
        return
    if not trust:
        raise _refuse(
            f"{problem}; refusing it (retrain, restore the original file, or pass "
            "--trust-unsigned / trust=True only if you know where this file comes from)",
            path,
        )
    warnings.warn(
        f"{path}: {problem}; loading it anyway because it was explicitly trusted",
        UntrustedModelWarning,
        stacklevel=3,
    )


def read_signed(
    path: str | Path,
    *,
    fmt: str = FORMAT,
    what: str = "treatment-selection model",
    trust: bool = False,
    key: bytes | None = None,
) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """Read any brainmatch model file of format ``fmt``: bounded, hashed and signed.

    The checks shared by every model kind (treatment-selection, normative): sizes from the
    zip directory, numbers only, the header's format and versions, the content hash and
    the keyed signature.  Kind-specific plausibility is the caller's.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.
    fmt : str
        The ``format`` the metadata must declare.
    what : str
        The kind of model, for messages.
    trust : bool
        Load an unsigned or foreign-key file with an :class:`UntrustedModelWarning`.
    key : bytes, optional
        Key to verify with (default: :func:`resolve_key`).

    Returns
    -------
    arrays : dict of ndarray
    meta : dict
    """
    path = Path(path)
    if not path.is_file():
        raise BrainmatchInputError("model file not found", path)
    arrays = _read_members(path)
    if _META not in arrays:
        raise _refuse("not a brainmatch model file (no metadata member)", path)
    blob = arrays.pop(_META)
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"))
    except (ValueError, RecursionError):
        raise _refuse(
            "the model metadata is corrupt (not valid, reasonably nested JSON)", path
        ) from None
    meta = _check_header(meta, path, fmt, what)
    try:
        expected = _content_hash(arrays, meta)
    except (ValueError, TypeError):
        raise _refuse("the model metadata holds values that are not valid JSON", path) from None
    if meta.get("content_sha256") != expected:
        raise _refuse(
            "the model file was modified after it was written (its content does not match the "
            "recorded SHA-256); retrain or restore the original file",
            path,
        )
    _verify_signature(arrays, meta, path, trust, key)
    return arrays, meta


def load_model(
    path: str | Path, *, trust: bool = False, key: bytes | None = None
) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """Read a treatment-selection model file, refusing anything not intact, signed, plausible.

    Parameters
    ----------
    path : str or Path
        The ``model.npz``.
    trust : bool
        Load an unsigned file, or one signed with another key, with an
        :class:`UntrustedModelWarning` instead of refusing it.  Damaged or implausible
        files are refused regardless.
    key : bytes, optional
        Key to verify with (default: :func:`resolve_key`).

    Returns
    -------
    arrays : dict of ndarray
    meta : dict

    Raises
    ------
    BrainmatchInputError
        Not a model file; damaged; too large; written by a newer brainmatch or format
        version; unsigned or wrongly signed (unless ``trust``); implausible content.
    """
    arrays, meta = read_signed(path, trust=trust, key=key)
    check_model(arrays, meta, path)
    return arrays, meta


# --------------------------------------------------------------------------- plausibility


def _finite_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def check_model(arrays: dict[str, NDArray[Any]], meta: dict[str, Any], path: str | Path) -> None:
    """Refuse a model whose content is not a plausible fitted model.

    Checks the arms and feature names, array shapes against them, finite coefficients and
    scaling, positive standard deviations, an ordered finite training outcome range and
    non-negative interval half-widths.

    Raises
    ------
    BrainmatchInputError
    """
    path = Path(path)

    def bad(msg: str) -> BrainmatchInputError:
        return _refuse(f"implausible model file: {msg}", path)

    arms = meta.get("arms")
    names = meta.get("feature_names")
    if (
        not isinstance(arms, list)
        or len(arms) < 2
        or not all(isinstance(a, str) for a in arms)
        or len(set(arms)) != len(arms)
    ):
        raise bad("'arms' is not a list of two or more distinct names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("'feature_names' is not a list of names")
    if meta.get("better") not in ("lower", "higher"):
        raise bad("'better' is neither lower nor higher")
    if not _finite_number(meta.get("threshold")):
        raise bad("the clinical threshold is not a finite number")
    rng = meta.get("outcome_range")
    if (
        not isinstance(rng, list)
        or len(rng) != 2
        or not all(_finite_number(v) for v in rng)
        or rng[0] > rng[1]
    ):
        raise bad("the training outcome range is missing, not finite or not ordered")
    conformal = meta.get("conformal")
    half = conformal.get("half_width") if isinstance(conformal, dict) else None
    if not isinstance(half, dict) or not all(
        v is None or (_finite_number(v) and v >= 0) for v in half.values()
    ):
        raise bad("prediction-interval half-widths are not non-negative finite numbers")
    _check_structure(meta, bad)
    k, p = len(arms), len(names)
    required = ("coef", "intercept", "cov_coef", "boot_coef", "boot_intercept", "boot_cov_coef")
    for req in (*required, "medians", "mean", "sd", "confound_coef"):
        if req not in arrays:
            raise bad(f"array {req!r} is missing")
    c = arrays["cov_coef"].shape[-1] if arrays["cov_coef"].ndim == 2 else -1
    expected = {
        "coef": (k, p),
        "intercept": (k,),
        "cov_coef": (k, c),
        "mean": (p,),
        "sd": (p,),
        "medians": (p,),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise bad(f"{name!r} has shape {arrays[name].shape}, expected {shape}")
    b = arrays["boot_coef"].shape[0] if arrays["boot_coef"].ndim == 3 else -1
    for name, shape in {
        "boot_coef": (b, k, p),
        "boot_intercept": (b, k),
        "boot_cov_coef": (b, k, c),
    }.items():
        if arrays[name].shape != shape:
            raise bad(f"{name!r} has shape {arrays[name].shape}, expected {shape}")
    if arrays["confound_coef"].ndim != 2 or arrays["confound_coef"].shape[1] != p:
        raise bad(f"'confound_coef' has shape {arrays['confound_coef'].shape}")
    for name in (*required, "mean", "sd", "confound_coef"):
        if not np.isfinite(arrays[name]).all():
            raise bad(f"{name!r} holds NaN or infinite values")
    if (arrays["sd"] <= 0).any():
        raise bad("'sd' holds values that are not positive")
    if meta["harmonize"]:
        n_sites = len(meta["sites"])
        for name, shape in {
            "combat_gamma": (n_sites, p),
            "combat_delta": (n_sites, p),
            "combat_grand_mean": (p,),
            "combat_var_pooled": (p,),
        }.items():
            arr = arrays.get(name)
            if arr is None or arr.shape != shape or not np.isfinite(arr).all():
                raise bad(f"{name!r} is missing, not finite or not of shape {shape}")
    if any(name.startswith(("tree_", "comp_", "boot_comp_")) for name in arrays):
        # a non-linear learner: every tree node, offset and weight is validated
        from brainmatch.selection.learners import spec_from_arrays

        spec_from_arrays(arrays, "identity", bad)
    if "selected" in arrays:
        sel = arrays["selected"]
        if sel.ndim != 1 or sel.dtype.kind not in "iu" or ((sel < 0) | (sel >= p)).any():
            raise bad("'selected' is not a list of feature indices")


def _check_structure(meta: dict[str, Any], bad: Any) -> None:
    """The metadata recommend reads: present and of the right kind (never a KeyError)."""
    opts = meta.get("options")
    if not isinstance(opts, dict) or not isinstance(opts.get("outcome_column"), str):
        raise bad("'options' does not name the outcome column")
    spec = meta.get("covariate_spec")
    if not isinstance(spec, list):
        raise bad("'covariate_spec' is not a list")
    for item in spec:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad("a covariate has no name")
        if item.get("kind") == "numeric":
            if not all(_finite_number(item.get(x)) for x in ("mean", "sd", "min", "max")):
                raise bad(f"covariate {item['name']!r} lacks finite mean / sd / min / max")
            if item["sd"] <= 0:
                raise bad(f"covariate {item['name']!r} has a standard deviation <= 0")
        elif item.get("kind") == "categorical":
            if not isinstance(item.get("levels"), list) or not item["levels"]:
                raise bad(f"covariate {item['name']!r} has no levels")
        else:
            raise bad(f"covariate {item['name']!r} has an unknown kind {item.get('kind')!r}")
    n_only = meta.get("n_outcome_only")
    if isinstance(n_only, bool) or not isinstance(n_only, int) or not 0 <= n_only <= len(spec):
        raise bad("'n_outcome_only' is not a count of covariates")
    if not isinstance(meta.get("harmonize"), bool):
        raise bad("'harmonize' is not true or false")
    if meta["harmonize"] and (not isinstance(meta.get("sites"), list) or not meta["sites"]):
        raise bad("the model harmonises sites but lists none")
    ood = meta.get("ood")
    if not isinstance(ood, dict) or not _finite_number(ood.get("p99")):
        raise bad("'ood' has no finite 99th percentile")
    validation = meta.get("validation")
    if not isinstance(validation, dict) or not isinstance(validation.get("selection"), dict):
        raise bad("'validation' has no selection summary")
    for key in ("brainmatch_version", "training_data_hash", "model"):
        if key not in meta:
            raise bad(f"{key!r} is missing")


def check_predictions(
    pred: NDArray[np.float64], meta: dict[str, Any], ids: list[str], path: str | Path
) -> list[list[str]]:
    """Check every prediction against the training outcomes; caveats per patient.

    A non-finite prediction is refused (no intact model makes one).  A prediction outside
    the outcome range seen in training (e.g. HAMD -38 when training outcomes ran 2-30)
    gets a caveat naming the value and the range: it comes from a patient unlike the
    training data, or from a damaged or forged model, and is an extrapolation either way.

    Parameters
    ----------
    pred : ndarray, shape (n_patients, n_arms)
    meta : dict
        Model metadata (``outcome_range``, ``arms``).
    ids : list of str
        Patient ids (named in the message).
    path : str or Path
        The model file.

    Returns
    -------
    list of list of str
        Caveats of each patient.
    """
    lo, hi = (float(v) for v in meta["outcome_range"])
    arms = meta["arms"]
    if pred.shape != (len(ids), len(arms)):
        raise _refuse(f"implausible model: predictions of shape {pred.shape}", path)
    bad = ~np.isfinite(pred)
    if bad.any():
        i, a = (int(v) for v in np.argwhere(bad)[0])
        raise _refuse(
            f"implausible prediction for {ids[i]}: {pred[i, a]} under {arms[a]}; the model "
            "file is damaged or forged",
            path,
        )
    caveats: list[list[str]] = []
    for i in range(len(ids)):
        out = [a for a in range(len(arms)) if not lo <= pred[i, a] <= hi]
        caveats.append(
            [
                "implausible prediction: "
                + ", ".join(f"{pred[i, a]:.3g} under {arms[a]}" for a in out)
                + f" lies outside the outcome range seen in training [{lo:g}, {hi:g}]; "
                "this is an extrapolation (or the model file is damaged): do not rely on it"
            ]
            if out
            else []
        )
    return caveats


def prediction_interval(value: float, half_width: float, meta: dict[str, Any]) -> list[float]:
    """The conformal interval ``value ± half_width`` clipped to the training outcome range.

    Clipping is monotone, so the interval is always ordered (lower <= upper).
    """
    lo, hi = (float(v) for v in meta.get("outcome_range", [-np.inf, np.inf]))
    lower = min(max(value - half_width, lo), hi)
    upper = max(min(value + half_width, hi), lo)
    return [lower, upper]
