"""Operations shared by the pages and the command line: users and model deployment."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from brainmatch.errors import BrainmatchInputError
from brainmatch.web import engine
from brainmatch.web.models import DeployedModel, Profile, Role
from brainmatch.web.uploads import check_type, inspect_zip

#: A model file is a small zip of arrays; refuse archives beyond these before np.load.
MODEL_MAX_UNPACKED = 2 * 1024**3
MODEL_MAX_MEMBERS = 1000


def create_user(username: str, role: str, password: str) -> Any:
    """Create a user with a role; the password must pass Django's validators.

    Raises
    ------
    BrainmatchInputError
        Unknown role, taken name, or a weak password (the validators' messages).
    """
    if role not in Role.values:
        raise BrainmatchInputError(f"--role {role!r}: expected one of {', '.join(Role.values)}")
    User = get_user_model()
    if not username or len(username) > 150:
        raise BrainmatchInputError("USERNAME: 1 to 150 characters")
    if User.objects.filter(username__iexact=username).exists():
        raise BrainmatchInputError(f"USERNAME: a user named {username!r} exists")
    candidate = User(username=username)
    try:
        validate_password(password, candidate)
    except ValidationError as exc:
        raise BrainmatchInputError("password: " + " ".join(exc.messages)) from None
    with transaction.atomic():
        user = User.objects.create_user(username=username, password=password)
        Profile.objects.create(user=user, role=role)
    return user


def deploy_model(src: Path, name: str, user: Any = None, kind: str | None = None) -> DeployedModel:
    """Verify a model file and copy it under a generated name into ``DATA/models/``.

    Parameters
    ----------
    src : Path
        A treatment-selection ``model.npz`` (``brainmatch train``) or a normative
        ``normative_model.npz`` (``brainmatch normative fit``); both must pass the same
        integrity and keyed-signature checks.
    name : str
        The name clinicians see.
    user : User, optional
        Who deployed it.
    kind : {"selection", "normative"}, optional
        Require this kind (default: whichever the file declares).

    Raises
    ------
    BrainmatchInputError
        Not a zip, a zip bomb, a model file that fails the integrity or signature check,
        or not of the required ``kind``.
    """
    if kind not in (None, "selection", "normative"):
        raise BrainmatchInputError(f"kind {kind!r}: expected 'selection' or 'normative'")
    check_type(src, ".npz", "model file")
    inspect_zip(src, MODEL_MAX_UNPACKED, MODEL_MAX_MEMBERS, "model file")
    try:
        if kind == "selection":
            found, summary = "selection", engine.verify_model_file(src)
        elif kind == "normative":
            found, summary = "normative", engine.verify_normative_file(src)
        else:
            found, summary = engine.verify_any_model_file(src)
    except BrainmatchInputError as exc:
        raise BrainmatchInputError(f"model file: {exc.reason}") from None
    file_name = secrets.token_hex(16) + ".npz"
    dest = Path(settings.BRAINMATCH.data_dir) / "models" / file_name
    engine.copy_model(src, dest)
    return DeployedModel.objects.create(
        name=name[:120],
        kind=found,
        file_name=file_name,
        sha256=engine.sha256_file(dest),
        summary=summary,
        created_by=user,
    )
