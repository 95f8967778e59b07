"""The modality knowledge base: treatments, the circuits and neurochemical systems each is
reported to act on, the direction, the kind of evidence and the citation.

The data live in ``brainmatch/data/modalities.json`` (versioned: ``version``, and
``schema_version`` of its layout), checked against :data:`SCHEMA` on load.  Every link
names a published source with a DOI, except links whose ``evidence`` is ``"claim"``: a
stated rationale without a primary study in the knowledge base, which has no DOI.

:func:`circuit_hypotheses` matches a person's circuit deviations to the modalities whose
reported targets would counter them.  The matches are hypotheses for discussion, never
validated predictions of who will respond.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from brainmatch.errors import BrainmatchInputError

SCHEMA_VERSION = 1
EVIDENCE = ("meta-analysis", "rct", "single-study", "review", "claim")
GRADE = {"meta-analysis": "A", "rct": "B", "single-study": "C", "review": "D", "claim": "E"}
DIRECTIONS = ("increase", "decrease", "change", "low", "high")
MEASURES = ("activity", "connectivity", "structure", "neurochemistry")
CLASSES = (
    "psychotherapy",
    "medication",
    "augmentation",
    "brain stimulation",
    "lifestyle",
    "chronotherapy",
)

#: The layout every link must follow (checked by :func:`validate`).
SCHEMA: dict[str, Any] = {
    "top": ("name", "schema_version", "version", "updated", "evidence_grades", "modalities"),
    "modality": ("key", "label", "class", "efficacy", "targets", "predictors"),
    "efficacy": ("statement", "evidence", "citation", "doi"),
    "link": ("measure", "direction", "evidence", "statement", "citation", "doi"),
}


def _fail(where: str, problem: str, path: Path | None) -> BrainmatchInputError:
    return BrainmatchInputError(f"knowledge base {where}: {problem}", path)


def validate(data: dict[str, Any], path: Path | None = None) -> None:
    """Check the knowledge base's layout and values; raise on the first problem."""
    for k in SCHEMA["top"]:
        if k not in data:
            raise _fail("top level", f"missing {k!r}", path)
    if data["schema_version"] != SCHEMA_VERSION:
        raise _fail(
            "top level",
            f"schema_version {data['schema_version']} (this brainmatch reads {SCHEMA_VERSION})",
            path,
        )
    from brainmatch.circuits import CIRCUITS, REGIONS

    keys = set()
    for m in data["modalities"]:
        where = f"modality {m.get('key', '?')!r}"
        for k in SCHEMA["modality"]:
            if k not in m:
                raise _fail(where, f"missing {k!r}", path)
        if m["key"] in keys:
            raise _fail(where, "duplicate key", path)
        keys.add(m["key"])
        if m["class"] not in CLASSES:
            raise _fail(where, f"class {m['class']!r} not one of {', '.join(CLASSES)}", path)
        for e in m["efficacy"]:
            _check_source(e, SCHEMA["efficacy"], f"{where} efficacy", path)
        for kind in ("targets", "predictors"):
            for link in m[kind]:
                w = f"{where} {kind[:-1]}"
                _check_source(link, SCHEMA["link"], w, path)
                if link["measure"] not in MEASURES:
                    raise _fail(w, f"measure {link['measure']!r} not one of {MEASURES}", path)
                if link["direction"] not in DIRECTIONS:
                    raise _fail(w, f"direction {link['direction']!r} not one of {DIRECTIONS}", path)
                circuit = link.get("circuit")
                if circuit is None and not link.get("system"):
                    raise _fail(w, "needs a circuit or a neurochemical system", path)
                if circuit is not None and circuit not in CIRCUITS:
                    raise _fail(w, f"unknown circuit {circuit!r}", path)
                region = link.get("region")
                if region is not None and region not in REGIONS:
                    raise _fail(w, f"unknown region {region!r}", path)


def _check_source(
    item: dict[str, Any], fields: tuple[str, ...], where: str, path: Path | None
) -> None:
    for k in fields:
        if k not in item:
            raise _fail(where, f"missing {k!r}", path)
    if item["evidence"] not in EVIDENCE:
        raise _fail(where, f"evidence {item['evidence']!r} not one of {', '.join(EVIDENCE)}", path)
    doi = item["doi"]
    if item["evidence"] == "claim":
        if doi is not None:
            raise _fail(where, "a 'claim' has no primary study, so it cannot carry a DOI", path)
    elif not (isinstance(doi, str) and doi.startswith("10.") and "/" in doi):
        raise _fail(
            where, f"evidence {item['evidence']!r} needs a DOI (10.xxxx/...), got {doi!r}", path
        )


@dataclass
class KnowledgeBase:
    """The loaded, validated knowledge base."""

    data: dict[str, Any]
    path: Path | None = None

    @property
    def version(self) -> str:
        """Version of the knowledge base's content."""
        return str(self.data["version"])

    @property
    def modalities(self) -> list[dict[str, Any]]:
        """The modality records."""
        return list(self.data["modalities"])

    def links(self) -> pd.DataFrame:
        """One row per target / predictor link (modality, circuit or system, direction,
        evidence and grade, citation, DOI)."""
        from brainmatch.circuits import CIRCUITS, REGIONS

        rows = []
        for m in self.data["modalities"]:
            for kind in ("targets", "predictors"):
                for link in m[kind]:
                    circuit = link.get("circuit")
                    region = link.get("region")
                    rows.append(
                        {
                            "modality": m["key"],
                            "modality_label": m["label"],
                            "class": m["class"],
                            "kind": kind[:-1],
                            "circuit": circuit or "",
                            "circuit_label": CIRCUITS[circuit].label if circuit else "",
                            "region": REGIONS[region].label if region else "",
                            "system": link.get("system") or "",
                            "measure": link["measure"],
                            "direction": link["direction"],
                            "evidence": link["evidence"],
                            "grade": GRADE[link["evidence"]],
                            "statement": link["statement"],
                            "citation": link["citation"],
                            "doi": link["doi"] or "",
                        }
                    )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """The raw data."""
        return self.data


def load_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """Read and validate the knowledge base (default: the one shipped in the package)."""
    if path is None:
        text = resources.files("brainmatch").joinpath("data/modalities.json").read_text("utf-8")
        source = None
    else:
        source = Path(path)
        if not source.is_file():
            raise BrainmatchInputError("knowledge base file not found", source)
        text = source.read_text("utf-8")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BrainmatchInputError(f"knowledge base is not valid JSON: {exc}", source) from None
    if not isinstance(data, dict):
        raise BrainmatchInputError("knowledge base must be a JSON object", source)
    validate(data, source)
    return KnowledgeBase(data, source)


#: How a circuit deviation (score, sign) is countered by a link's (measure, direction).
def _counters(score: str, sign: int, measure: str, direction: str) -> bool:
    wanted = {"activity": "activity", "within": "connectivity", "between": "connectivity"}.get(
        score, "structure"
    )
    if measure != wanted:
        return False
    if direction == "change":
        return True
    return (sign < 0 and direction == "increase") or (sign > 0 and direction == "decrease")


def circuit_hypotheses(
    circuits: pd.DataFrame, kb: KnowledgeBase | None = None
) -> list[dict[str, Any]]:
    """Match one person's called circuit deviations to modalities' reported targets and
    to published predictors.

    Parameters
    ----------
    circuits : DataFrame
        One person's rows of :func:`brainmatch.circuits.circuit_scores` (``call`` set where
        the deviation passed the threshold).
    kb : KnowledgeBase, optional

    Returns
    -------
    list of dict
        One entry per (deviation, link): the circuit, its score, mean z and SE, the
        modality, the link (target or predictor), direction, evidence grade, statement and
        citation.  Sorted by evidence grade, then by |z|.
    """
    kb = kb or load_knowledge_base()
    called = circuits[circuits["call"].astype(str) != ""]
    out = []
    for row in called.itertuples(index=False):
        sign = 1 if row.mean_z > 0 else -1
        for m in kb.modalities:
            for kind in ("targets", "predictors"):
                for link in m[kind]:
                    if link.get("circuit") != row.circuit:
                        continue
                    if kind == "targets":
                        ok = _counters(row.score, sign, link["measure"], link["direction"])
                    else:
                        wanted = "connectivity" if row.score in ("within", "between") else row.score
                        ok = link["measure"] == wanted and (
                            (link["direction"] == "low" and sign < 0)
                            or (link["direction"] == "high" and sign > 0)
                        )
                    if not ok:
                        continue
                    out.append(
                        {
                            "circuit": row.circuit,
                            "circuit_label": row.circuit_label,
                            "score": row.score,
                            "call": row.call,
                            "mean_z": float(row.mean_z),
                            "se": float(row.se),
                            "modality": m["key"],
                            "modality_label": m["label"],
                            "link": "target" if kind == "targets" else "predictor",
                            "direction": link["direction"],
                            "evidence": link["evidence"],
                            "grade": GRADE[link["evidence"]],
                            "statement": link["statement"],
                            "citation": link["citation"],
                            "doi": link["doi"],
                        }
                    )
    out.sort(key=lambda h: (h["grade"], -abs(h["mean_z"])))
    return out
