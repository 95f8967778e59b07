"""Checks on everything a user uploads: size, type, identifiers, zip archives.

Every refusal is a :class:`UploadRefused` whose message names the field and says what is
wrong; nothing here ever echoes an uploaded value back (messages name columns and row
numbers only), so a refusal can be shown and logged without leaking patient data.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from brainmatch.errors import BrainmatchInputError

CHUNK = 1024 * 1024
TABLE_EXTENSIONS = (".csv", ".tsv", ".parquet")
#: Column names that identify a person (compared after lower-casing and removing
#: everything but letters and digits).
IDENTIFYING_COLUMNS = {
    "name", "firstname", "lastname", "surname", "givenname", "familyname", "fullname",
    "patientname", "forename", "middlename", "maidenname", "initials",
    "dob", "dateofbirth", "birthdate", "birthday", "birthdt", "yearofbirth",
    "address", "streetaddress", "street", "postcode", "zipcode", "city",
    "email", "emailaddress", "phone", "phonenumber", "telephone", "mobile",
    "nhsnumber", "ssn", "socialsecuritynumber", "mrn", "medicalrecordnumber",
    "insurancenumber", "passport", "passportnumber",
}  # fmt: skip
PSEUDONYM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DATE_VALUE = re.compile(
    r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})([ T].*)?\s*$"
)
_MAGIC_BINARY = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"%PDF", b"PK\x03\x04", b"\x1f\x8b",
                 b"\x7fELF", b"MZ", b"PAR1", b"BZh", b"\xfd7zXZ")  # fmt: skip


def mb(n: float) -> str:
    """A byte count in MB for messages (one decimal below 10 MB)."""
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


class UploadRefused(BrainmatchInputError):
    """An upload the service will not accept; ``reason`` is safe to show the user."""


def extension(filename: str) -> str:
    """Lower-case extension of an uploaded file's name (``.csv``, ``.zip``, ...)."""
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def save_upload(upload: Any, dest: Path, max_bytes: int, field: str) -> Path:
    """Copy an uploaded file to ``dest`` chunk by chunk, refusing it above ``max_bytes``.

    ``dest`` is a generated name inside the private data folder; the user's file name is
    never used on disk.
    """
    size = getattr(upload, "size", None)
    if size is not None and size > max_bytes:
        raise UploadRefused(f"{field}: the file is {mb(size)}, above the limit of {mb(max_bytes)}")
    written = 0
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(dest, "xb") as out:
        for chunk in upload.chunks(CHUNK):
            written += len(chunk)
            if written > max_bytes:
                out.close()
                dest.unlink()
                raise UploadRefused(f"{field}: the file is above the limit of {mb(max_bytes)}")
            out.write(chunk)
    dest.chmod(0o600)
    return dest


def _head(path: Path, n: int = 65536) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def check_type(path: Path, ext: str, field: str) -> None:
    """Refuse a file whose content is not what its extension says."""
    head = _head(path)
    if ext in (".csv", ".tsv"):
        if not head.strip():
            raise UploadRefused(f"{field}: the file is empty")
        if head.startswith(_MAGIC_BINARY) or b"\x00" in head:
            raise UploadRefused(
                f"{field}: the file is not a text table although its name ends in {ext}"
            )
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if len(head) < 65536 or exc.start < len(head) - 4:  # not a cut character
                raise UploadRefused(
                    f"{field}: the file is not UTF-8 text (byte {exc.start}); save it as "
                    "UTF-8 CSV or TSV"
                ) from None
    elif ext == ".parquet":
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4))
            tail = fh.read(4)
        if not (head[:4] == b"PAR1" and tail == b"PAR1"):
            raise UploadRefused(f"{field}: the file is not a Parquet file")
    elif ext in (".zip", ".npz"):
        if head[:4] != b"PK\x03\x04" or not zipfile.is_zipfile(path):
            raise UploadRefused(f"{field}: the file is not a zip archive")
    else:
        raise UploadRefused(f"{field}: files ending in {ext or '(nothing)'} are not accepted")


def read_table(path: Path, ext: str, field: str, max_expanded_bytes: int) -> pd.DataFrame:
    """Read an uploaded CSV / TSV / Parquet table after :func:`check_type`."""
    check_type(path, ext, field)
    try:
        if ext == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path).metadata
            expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            if expanded > max_expanded_bytes:
                raise UploadRefused(
                    f"{field}: the Parquet file expands to {mb(expanded)}, above the "
                    f"limit of {mb(max_expanded_bytes)}"
                )
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(
                path,
                sep="\t" if ext == ".tsv" else ",",
                na_values=["n/a", "NA", ""],
                dtype={"participant_id": str},  # "007" stays "007"
                encoding="utf-8-sig",
            )
    except UploadRefused:
        raise
    except Exception as exc:
        raise UploadRefused(
            f"{field}: cannot read the table ({type(exc).__name__}); expected a {ext[1:]} file "
            "with a header row"
        ) from None
    if table.shape[0] == 0:
        raise UploadRefused(f"{field}: the table has no rows")
    check_pseudonymised(table, field)
    return table


def check_pseudonymised(table: pd.DataFrame, field: str) -> None:
    """Refuse names, dates of birth and other direct identifiers.

    Checks the column names against :data:`IDENTIFYING_COLUMNS`, requires a
    ``participant_id`` column of codes (letters, digits, ``-``, ``_``, ``.``; no spaces,
    so no "First Last"), and refuses any text cell that looks like a calendar date.
    """
    for col in table.columns:
        key = re.sub(r"[^a-z0-9]", "", str(col).lower())
        if key in IDENTIFYING_COLUMNS or "birth" in key or key.endswith("dob"):
            raise UploadRefused(
                f"{field}: column {str(col)[:40]!r} looks like a direct identifier (name, date "
                "of birth, address or contact); upload pseudonymised data only (age in years "
                "instead of a date of birth)"
            )
    if "participant_id" not in table.columns:
        raise UploadRefused(f"{field}: no participant_id column (a pseudonymised code per row)")
    ids = table["participant_id"]
    for row, value in enumerate(ids, start=2):
        if pd.isna(value) or not PSEUDONYM.match(str(value)):
            raise UploadRefused(
                f"{field}: participant_id in line {row} is not a pseudonymised code (letters, "
                "digits, '-', '_' and '.' only, no spaces; e.g. sub-001)"
            )
    for col in table.columns:
        series = table[col]
        if series.dtype.kind not in "OSU":
            continue
        for row, value in enumerate(series, start=2):
            if isinstance(value, str) and DATE_VALUE.match(value):
                raise UploadRefused(
                    f"{field}: column {str(col)[:40]!r} holds a date (line {row}); dates of "
                    "birth or of visits are not accepted, give ages or intervals instead"
                )


def inspect_zip(path: Path, max_total: int, max_files: int, field: str) -> list[zipfile.ZipInfo]:
    """Check a zip archive's directory before anything is extracted.

    Refuses: more than ``max_files`` members, a declared total above ``max_total``
    bytes, absurd compression ratios (zip bombs), absolute paths, ``..``, drive letters,
    backslashes, symbolic links, encrypted or duplicated members.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UploadRefused(f"{field}: the file is not a readable zip archive") from None
    if len(infos) > max_files:
        raise UploadRefused(
            f"{field}: the archive holds {len(infos)} entries, above the limit of {max_files}"
        )
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise UploadRefused(
            f"{field}: the archive would unpack to {mb(total)}, above the limit of "
            f"{mb(max_total)} (zip bomb?)"
        )
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or "\x00" in name
            or re.match(r"^[A-Za-z]:", name)
            or ".." in parts
        ):
            raise UploadRefused(
                f"{field}: the archive holds a path that points outside its folder "
                "(absolute, '..' or a drive letter); refused"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadRefused(f"{field}: the archive holds a symbolic link; refused")
        if info.flag_bits & 0x1:
            raise UploadRefused(f"{field}: the archive holds an encrypted file; refused")
        if info.file_size > 10 * CHUNK and info.file_size > 1000 * max(info.compress_size, 1):
            raise UploadRefused(
                f"{field}: a member of the archive is compressed more than 1000:1 (zip bomb?)"
            )
        key = name.rstrip("/")
        if key in seen:
            raise UploadRefused(f"{field}: the archive holds the same path twice")
        seen.add(key)
    return infos


def safe_extract_zip(path: Path, dest: Path, max_total: int, max_files: int, field: str) -> Path:
    """Extract a zip archive into the new folder ``dest`` after :func:`inspect_zip`.

    Sizes are counted again while writing (a directory can lie), regular files only, no
    permission bits from the archive.  On any refusal ``dest`` is removed.
    """
    infos = inspect_zip(path, max_total, max_files, field)
    dest.mkdir(mode=0o700, parents=True, exist_ok=False)
    root = dest.resolve()
    written = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in infos:
                target = (dest / info.filename).resolve()
                if not target.is_relative_to(root):
                    raise UploadRefused(f"{field}: the archive holds a path outside its folder")
                if info.is_dir():
                    target.mkdir(mode=0o700, parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                member = 0
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(CHUNK):
                        member += len(chunk)
                        written += len(chunk)
                        if member > info.file_size or written > max_total:
                            raise UploadRefused(
                                f"{field}: the archive unpacks to more than it declares; refused"
                            )
                        out.write(chunk)
                target.chmod(0o600)
    except UploadRefused:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        kind = "zlib" if "zlib" in type(exc).__module__ else type(exc).__name__
        raise UploadRefused(f"{field}: the archive is corrupt ({kind})") from None
    return dest


def arrange_subject(extracted: Path, bids: Path, pseudonym: str, field: str) -> str:
    """Lay a zipped fMRIPrep (and FreeSurfer) subject folder out as a BIDS dataset.

    The archive must hold one fMRIPrep subject folder ``sub-<label>/`` with
    ``func/*_desc-preproc_bold.nii.gz`` (optionally inside a top folder), and may hold a
    FreeSurfer subject (``stats/aseg.stats``).  Returns the participant label.
    """
    bolds = [p for p in extracted.rglob("*_desc-preproc_bold.nii*") if p.is_file()]
    subjects = sorted({p for b in bolds for p in b.parents if p.name.startswith("sub-")})
    subjects = [s for s in subjects if not any(q.name.startswith("sub-") for q in s.parents)]
    if len(subjects) != 1:
        raise UploadRefused(
            f"{field}: expected one fMRIPrep subject folder (sub-<label>/func/"
            f"*_desc-preproc_bold.nii.gz) in the archive, found {len(subjects)}"
        )
    subject = subjects[0]
    if subject.name != pseudonym:
        raise UploadRefused(
            f"{field}: the archive's subject folder is not named after participant_id "
            "(expected the same sub-<label> code in the clinical table)"
        )
    fmriprep = bids / "derivatives" / "fmriprep"
    fmriprep.mkdir(mode=0o700, parents=True)
    shutil.move(str(subject), fmriprep / subject.name)
    asegs = [p for p in extracted.rglob("aseg.stats") if p.parent.name == "stats"]
    if asegs:
        fs = bids / "derivatives" / "freesurfer" / subject.name
        fs.mkdir(mode=0o700, parents=True)
        shutil.move(str(asegs[0].parent), fs / "stats")
    (bids / "dataset_description.json").write_text(
        '{"Name": "brainmatch upload", "BIDSVersion": "1.9.0"}\n'
    )
    return subject.name


def write_tsv(table: pd.DataFrame, dest: Path) -> Path:
    """Store a checked table as TSV under a generated name (mode 0600)."""
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(dest, "x", encoding="utf-8") as fh:
        table.to_csv(fh, sep="\t", index=False, na_rep="n/a")
    dest.chmod(0o600)
    return dest
