"""Hostile input to the web service: sizes, zip bombs, traversal, symlinks, wrong types,
forged model files, script injection, CSRF and cross-user access (issue 17)."""

from __future__ import annotations

import io
import itertools
import os
import stat
import zipfile
from contextlib import contextmanager

import numpy as np
import pytest

from _webtest import PASSWORD, django_ready, patient_csv, trained_model

_names = itertools.count()
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def cfg():
    return django_ready()


@pytest.fixture(scope="module")
def trained():
    return trained_model()


@pytest.fixture(scope="module")
def deployed(cfg, trained):
    from brainmatch.web.services import deploy_model

    return deploy_model(trained.model, "security model")


def make_user(role):
    from brainmatch.web.services import create_user

    return create_user(f"s{role[:3]}{next(_names)}-{os.getpid()}", role, PASSWORD)


def client_for(user, csrf=False):
    from django.test import Client

    c = Client(enforce_csrf_checks=csrf)
    c.force_login(user)
    return c


@contextmanager
def limits(cfg, **values):
    old = {k: getattr(cfg, k) for k in values}
    for k, v in values.items():
        setattr(cfg, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(cfg, k, v)


def post_patient(client, deployed, name, content, clinical=None):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"features": SimpleUploadedFile(name, content), "model": str(deployed.pk)}
    if clinical is not None:
        data["clinical"] = SimpleUploadedFile("clinical.csv", clinical)
    return client.post("/patients/new/", data)


def text(response):
    return response.content.decode().replace("&#x27;", "'")


def zip_bytes(members, *, compression=zipfile.ZIP_DEFLATED):
    """members: list of (ZipInfo or name, bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for info, data in members:
            zf.writestr(info, data, compress_type=compression)
    return buf.getvalue()


def nothing_stored(cfg, clinician):
    """No patient for this clinician, and no folder without its patient (nothing kept)."""
    from brainmatch.web.models import Patient

    assert not Patient.objects.filter(owner=clinician).exists()
    root = cfg.data_dir / "patients"
    folders = {p.name for p in root.iterdir()} if root.exists() else set()
    assert folders == set(Patient.objects.values_list("storage", flat=True))


# --- sizes ------------------------------------------------------------------------------


def test_request_above_the_upload_limit_is_refused_before_reading(cfg, deployed):
    clin = make_user("clinician")
    with limits(cfg, max_upload_bytes=100_000):
        r = post_patient(client_for(clin), deployed, "big.csv", b"a,b\n" + b"1,2\n" * 60_000)
    assert r.status_code == 413
    assert b"Upload refused: the request is 0.2 MB, above the limit of 0.1 MB" in r.content
    nothing_stored(cfg, clin)


def test_table_above_the_table_limit_is_refused(cfg, trained, deployed):
    clin = make_user("clinician")
    big = patient_csv(trained) + b"\n" * 300_000
    with limits(cfg, max_table_bytes=200_000):
        r = post_patient(client_for(clin), deployed, "row.csv", big)
    assert r.status_code == 400
    assert "features: the file is 0.3 MB, above the limit of 0.2 MB" in text(r)
    nothing_stored(cfg, clin)


def test_upload_handler_stops_a_body_that_lies_about_its_size(cfg):
    from django.test import RequestFactory

    from brainmatch.web.middleware import _LimitHandler

    request = RequestFactory().post("/")
    handler = _LimitHandler(request, limit=1000)
    from django.core.files.uploadhandler import StopUpload

    handler.receive_data_chunk(b"x" * 600, 0)
    with pytest.raises(StopUpload):
        handler.receive_data_chunk(b"x" * 600, 600)
    assert request.META["brainmatch.upload_too_large"]


def test_one_patient_per_upload(cfg, trained, deployed):
    clin = make_user("clinician")
    rows = trained.new.iloc[:2].to_csv(index=False).encode()
    r = post_patient(client_for(clin), deployed, "rows.csv", rows)
    assert r.status_code == 400 and "one patient per upload, but the table has 2 rows" in text(r)


# --- zip archives ---------------------------------------------------------------------------


CLINICAL = b"participant_id,site,age,sex,hamd_baseline\nsub-001,site01,40,F,22\n"


@pytest.mark.parametrize(
    ("members", "settings", "message"),
    [
        ([("sub-001/func/huge.nii", b"\0" * (30 << 20))], {"zip_max_total_bytes": 10 << 20},
         "would unpack to 31 MB, above the limit of 10 MB (zip bomb?)"),
        ([(f"sub-001/f{i}.txt", b"x") for i in range(30)], {"zip_max_files": 20},
         "the archive holds 30 entries, above the limit of 20"),
        ([("sub-001/func/zeros.nii", b"\0" * (40 << 20))], {},
         "compressed more than 1000:1 (zip bomb?)"),
        ([("../evil.txt", b"x")], {}, "a path that points outside its folder"),
        ([("sub-001/../../evil.txt", b"x")], {}, "a path that points outside its folder"),
        ([("/etc/evil.txt", b"x")], {}, "a path that points outside its folder"),
        ([("C:/evil.txt", b"x")], {}, "a path that points outside its folder"),
        ([("sub-001\\..\\evil.txt", b"x")], {}, "a path that points outside its folder"),
        ([("sub-001/a.txt", b"x"), ("sub-001/a.txt", b"y")], {}, "the same path twice"),
    ],
)  # fmt: skip
def test_hostile_zip_archives_are_refused_before_extraction(
    cfg, deployed, members, settings, message
):
    import warnings

    clin = make_user("clinician")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        data = zip_bytes(members)
    with limits(cfg, **settings):
        r = post_patient(client_for(clin), deployed, "subject.zip", data, CLINICAL)
    assert r.status_code == 400 and message in text(r), text(r)[:3000]
    nothing_stored(cfg, clin)
    assert (
        not (cfg.data_dir / "evil.txt").exists() and not (cfg.data_dir.parent / "evil.txt").exists()
    )


def test_symlink_and_encrypted_members_are_refused(cfg, deployed):
    clin = make_user("clinician")
    link = zipfile.ZipInfo("sub-001/func/link.nii.gz")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    r = post_patient(
        client_for(clin), deployed, "s.zip", zip_bytes([(link, b"/etc/passwd")]), CLINICAL
    )
    assert r.status_code == 400 and "holds a symbolic link" in text(r)
    data = bytearray(zip_bytes([("sub-001/secret.txt", b"x")]))
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the encrypted flag
        at = data.find(sig) + offset
        data[at] |= 0x1
    r = post_patient(client_for(clin), deployed, "s.zip", bytes(data), CLINICAL)
    assert r.status_code == 400 and "encrypted" in text(r)


def test_zip_whose_directory_lies_is_refused(tmp_path):
    from brainmatch.web.uploads import UploadRefused, safe_extract_zip

    data = bytearray(zip_bytes([("sub-001/a.txt", b"y" * 5000)], compression=zipfile.ZIP_STORED))
    # shrink the declared uncompressed size in the local header and the central directory
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        data[at + offset : at + offset + 4] = (100).to_bytes(4, "little")
    path = tmp_path / "lie.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(UploadRefused, match=r"corrupt|more than it declares"):
        safe_extract_zip(path, tmp_path / "out", 1 << 30, 100, "features")
    assert not (tmp_path / "out").exists()


def test_a_valid_zipped_subject_is_laid_out_as_bids(tmp_path):
    from brainmatch.web.uploads import arrange_subject, safe_extract_zip

    data = zip_bytes(
        [
            ("export/sub-001/func/sub-001_task-rest_desc-preproc_bold.nii.gz", b"nifti"),
            ("export/sub-001/func/sub-001_task-rest_desc-confounds_timeseries.tsv", b"a\n1\n"),
            ("export/freesurfer/sub-001/stats/aseg.stats", b"# aseg\n"),
        ]
    )
    (tmp_path / "s.zip").write_bytes(data)
    out = safe_extract_zip(tmp_path / "s.zip", tmp_path / "x", 1 << 30, 100, "features")
    assert arrange_subject(out, tmp_path / "bids", "sub-001", "features") == "sub-001"
    bold = (
        tmp_path
        / "bids/derivatives/fmriprep/sub-001/func/sub-001_task-rest_desc-preproc_bold.nii.gz"
    )
    assert bold.read_bytes() == b"nifti"
    assert (tmp_path / "bids/derivatives/freesurfer/sub-001/stats/aseg.stats").is_file()
    assert bold.stat().st_mode & 0o077 == 0
    from brainmatch.web.uploads import UploadRefused

    with pytest.raises(UploadRefused, match="not named after participant_id"):
        out2 = safe_extract_zip(tmp_path / "s.zip", tmp_path / "y", 1 << 30, 100, "features")
        arrange_subject(out2, tmp_path / "bids2", "sub-002", "features")


# --- file types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("row.csv", b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
         "features: the file is not a text table although its name ends in .csv"),
        ("row.tsv", "participant_id\tx\nsub-1\t1\n".encode("utf-16"),
         "features: the file is not a text table"),
        ("row.csv", b"participant_id,x\nsub-1,\xff\xfe1\n", "features: the file is not UTF-8 text"),
        ("row.parquet", b"participant_id,x\nsub-1,1\n", "features: the file is not a Parquet file"),
        ("subject.zip", b"participant_id,x\nsub-1,1\n", "features: the file is not a zip archive"),
        ("row.xlsx", b"PK\x03\x04 not really",
         "expected a CSV, TSV or Parquet row or a .zip subject folder, not '.xlsx'"),
        ("run.exe", b"MZ\x90\x00", "not '.exe'"),
        ("row.csv", b"", "The submitted file is empty"),
    ],
)  # fmt: skip
def test_files_that_are_not_what_their_extension_says(cfg, deployed, name, content, message):
    clin = make_user("clinician")
    clinical = CLINICAL if name.endswith(".zip") else None
    r = post_patient(client_for(clin), deployed, name, content, clinical)
    assert r.status_code == 400 and message in text(r), text(r)[:2000]
    nothing_stored(cfg, clin)


# --- model files ------------------------------------------------------------------------------


def _tampered(src, dest):
    """Scale the coefficients by -50 and keep the recorded hash: a forged model."""
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["coef"] = arrays["coef"] * -50
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    dest.write_bytes(buf.getvalue())
    return dest


def _pickled(dest):
    import pickle

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("__meta__.npy", pickle.dumps({"x": 1}))
    dest.write_bytes(buf.getvalue())
    return dest


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda src, d: _tampered(src, d), "modified after it was written"),
        (lambda src, d: _pickled(d), "not a brainmatch model file"),
        (lambda src, d: (d.write_bytes(zip_bytes([("coef.npy", b"\0" * (40 << 20))])), d)[1],
         "compressed more than 1000:1"),
        (lambda src, d: (d.write_bytes(b"not a zip"), d)[1],
         "model file: the file is not a zip archive"),
    ],
)  # fmt: skip
def test_model_files_failing_the_integrity_check_are_refused(cfg, trained, tmp_path, make, message):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from brainmatch.web.models import AuditEvent, DeployedModel

    adm = make_user("admin")
    path = make(trained.model, tmp_path / "model.npz")
    n_models = DeployedModel.objects.count()
    n_files = len(list((cfg.data_dir / "models").glob("*")))
    r = client_for(adm).post(
        "/manage/models/",
        {"name": "forged", "file": SimpleUploadedFile("model.npz", path.read_bytes())},
    )
    assert r.status_code == 400 and message in text(r), text(r)[:3000]
    assert DeployedModel.objects.count() == n_models
    assert len(list((cfg.data_dir / "models").glob("*"))) == n_files
    assert AuditEvent.objects.filter(action="model.refused", user=adm).exists()


def test_a_model_tampered_after_deployment_is_refused_by_the_job(cfg, trained, tmp_path):
    from brainmatch.web.jobs import model_path, work
    from brainmatch.web.models import Job, Patient
    from brainmatch.web.services import deploy_model

    model = deploy_model(trained.model, "to be tampered")
    _tampered(trained.model, model_path(model))
    clin = make_user("clinician")
    r = post_patient(client_for(clin), model, "row.csv", patient_csv(trained, 5))
    assert r.status_code == 302
    work(once=True)
    job = Job.objects.get(patient=Patient.objects.get(owner=clin))
    assert job.status == Job.FAILED and "modified after it was written" in job.error


# --- script injection -------------------------------------------------------------------------


def test_html_and_script_are_escaped_everywhere(cfg, trained, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from brainmatch.selection import train
    from brainmatch.web.jobs import patient_dir, work
    from brainmatch.web.models import Job, Patient, Study
    from brainmatch.web.services import deploy_model

    # a model whose feature names and arm labels carry markup
    evil = '<img src=x onerror="alert(1)">'
    f = trained.features.rename(columns=lambda c: c if c == "participant_id" else c + evil)
    o = trained.outcomes.copy()
    o["arm"] = o["arm"].map({"CBT": "CBT<b>", "SSRI": "SSRI"})
    res = train(f, o, treatment_column="arm", outcome_column="hamd_week8",
                out_dir=tmp_path / "m", n_repeats=1, n_permutations=0, n_boot=20,
                learning_curve=False)  # fmt: skip
    model = deploy_model(res.model_path, f"Model {XSS}")
    adm = client_for(make_user("admin"))
    r = adm.post("/manage/studies/", {"name": f"Study {XSS}"})
    assert r.status_code == 302
    study = Study.objects.get(name=f"Study {XSS}")
    for url in ("/manage/models/", "/manage/studies/"):
        page = adm.get(url).content.decode()
        assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page, url
    assert XSS not in adm.get("/manage/audit/").content.decode()
    clin = make_user("clinician")
    study.members.add(clin)
    c = client_for(clin)
    row = f.merge(o[["participant_id"]]).iloc[[0]]
    r = post_patient(c, model, "row.csv", row.to_csv(index=False).encode())
    assert r.status_code == 302
    work(once=True)
    patient = Patient.objects.get(owner=clin)
    assert Job.objects.get(patient=patient).status == Job.DONE
    for url in ("/patients/", f"/patients/{patient.pk}/"):
        page = c.get(url).content.decode()
        assert XSS not in page and "<img src=x" not in page and "CBT<b>" not in page
    page = c.get(f"/patients/{patient.pk}/").content.decode()
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page and "CBT&lt;b&gt;" in page
    report = (patient_dir(patient) / "output" / "report.html").read_text()
    assert "<img src=x" not in report and "&lt;img src=x" in report
    # an identifying column whose name carries markup is refused and echoed escaped
    bad = row.assign(**{"date_of_birth<script>": 1})
    r = post_patient(c, model, "row.csv", bad.to_csv(index=False).encode())
    assert r.status_code == 400 and "<script>" not in r.content.decode()
    assert "date_of_birth&lt;script&gt;" in r.content.decode()
    # the dataset name of a researcher
    rc = client_for(make_user("researcher"))
    r = rc.post("/datasets/new/", {
        "name": XSS,
        "features": SimpleUploadedFile("f.csv", trained.features.to_csv(index=False).encode()),
        "outcomes": SimpleUploadedFile("o.csv", trained.outcomes.to_csv(index=False).encode()),
    })  # fmt: skip
    page = rc.get(r["Location"]).content.decode()
    assert XSS not in page and "&lt;script&gt;" in page


# --- CSRF ----------------------------------------------------------------------------------


def test_every_state_changing_form_needs_the_csrf_token(cfg, trained, deployed):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from brainmatch.web.models import Dataset, Job, Patient
    from brainmatch.web.urls import urlpatterns

    clin, res, adm = make_user("clinician"), make_user("researcher"), make_user("admin")
    post_patient(client_for(clin), deployed, "row.csv", patient_csv(trained, 6))
    patient = Patient.objects.get(owner=clin)
    ds = Dataset.objects.create(
        name="d", owner=res, storage=os.urandom(16).hex(), outcome_columns=["arm"]
    )
    job = Job.objects.create(kind="train", created_by=res, dataset=ds, status=Job.DONE)
    posts = {
        "login": (None, "/login/", {"username": clin.username, "password": PASSWORD}),
        "logout": (clin, "/logout/", {}),
        "patient-create": (clin, "/patients/new/", {"model": str(deployed.pk),
                           "features": SimpleUploadedFile("r.csv", patient_csv(trained, 6))}),
        "patient-delete": (clin, f"/patients/{patient.pk}/delete/", {}),
        "dataset-create": (res, "/datasets/new/", {"name": "x"}),
        "dataset": (res, f"/datasets/{ds.pk}/", {"treatment_column": "arm"}),
        "manage-users": (adm, "/manage/users/", {"username": "x" * 5, "role": "admin"}),
        "manage-user": (adm, f"/manage/users/{clin.pk}/", {"role": "admin", "active": "on"}),
        "manage-models": (adm, "/manage/models/", {"name": "x"}),
        "manage-model-toggle": (adm, f"/manage/models/{deployed.pk}/toggle/", {}),
        "manage-deploy-training": (adm, f"/manage/trainings/{job.pk}/deploy/", {"name": "x"}),
        "manage-studies": (adm, "/manage/studies/", {"name": "x"}),
    }  # fmt: skip
    read_only = {"home", "healthz", "css", "patients", "patient", "patient-status",
                 "patient-report", "patient-profile", "datasets", "training", "training-report",
                 "manage-audit"}  # fmt: skip
    assert {p.name for p in urlpatterns} == set(posts) | read_only  # a new form needs a test
    for name, (user, url, data) in posts.items():
        c = client_for(user, csrf=True) if user else Client(enforce_csrf_checks=True)
        r = c.post(url, data)
        assert r.status_code == 403, (name, r.status_code)
    patient.refresh_from_db()  # still there
    deployed.refresh_from_db()
    assert deployed.deployed
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(pk=clin.pk).bm_profile.role == "clinician"


def test_logout_and_delete_refuse_get(cfg):
    clin = make_user("clinician")
    assert client_for(clin).get("/logout/").status_code == 405
    assert client_for(clin).get("/patients/new/").status_code == 405


# --- another user's data ------------------------------------------------------------------------


def test_cross_user_access_is_404_and_logged(cfg, trained, deployed):
    from brainmatch.web.jobs import work
    from brainmatch.web.models import AuditEvent, Dataset, Job, Patient

    owner, other = make_user("clinician"), make_user("clinician")
    post_patient(client_for(owner), deployed, "row.csv", patient_csv(trained, 7))
    work(once=True)
    patient = Patient.objects.get(owner=owner)
    base = f"/patients/{patient.pk}/"
    c = client_for(other)
    for url in (base, base + "status.json", base + "report.html", base + "report.pdf"):
        assert c.get(url).status_code == 404, url
    assert c.post(base + "delete/").status_code == 404
    assert Patient.objects.filter(pk=patient.pk).exists()
    denied = AuditEvent.objects.filter(
        action="patient.denied", user=other, target_id=str(patient.pk)
    )
    assert denied.count() == 5 and all(e.outcome == "denied" for e in denied)
    # the owner still sees it; unknown or malformed ids are plain 404s
    assert client_for(owner).get(base).status_code == 200
    assert c.get("/patients/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert c.get("/patients/1%20OR%201=1/").status_code == 404
    # researchers: datasets and trainings of someone else
    r1, r2 = make_user("researcher"), make_user("researcher")
    ds = Dataset.objects.create(name="d", owner=r1, storage=os.urandom(16).hex())
    job = Job.objects.create(kind="train", created_by=r1, dataset=ds)
    rc = client_for(r2)
    assert rc.get(f"/datasets/{ds.pk}/").status_code == 404
    assert rc.get(f"/trainings/{job.pk}/").status_code == 404
    assert rc.get(f"/trainings/{job.pk}/report.html").status_code == 404
    assert AuditEvent.objects.filter(action="dataset.denied", user=r2).count() == 1
    assert AuditEvent.objects.filter(action="training.denied", user=r2).count() == 2


def test_participant_codes_keep_their_leading_zeros(tmp_path):
    from brainmatch.web.uploads import read_table

    path = tmp_path / "t.csv"
    path.write_text("participant_id,x\n007,1.5\n")
    table = read_table(path, ".csv", "features", 1 << 20)
    assert table["participant_id"].tolist() == ["007"]
