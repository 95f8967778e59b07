"""Healthy controls and patients as feature tables with known deviations (normative truth).

:func:`draw_cohort` draws a multi-site cohort of healthy controls and patients directly as
a brainmatch feature table (Desikan-Killiany names, as ``brainmatch extract`` writes
them): regional activity (``amp__``), connectivity (``conn__``), subcortical volumes
(``vol__``) and cortical thickness (``thick__``).  Every feature depends smoothly
(non-linearly) on age, on sex and on site (location and scale), with noise whose SD
changes with age and a shared person factor (features are correlated, as real ones are).

Patients differ from controls in two known ways:

- **ENIGMA-MDD effects**: every subcortical volume and cortical thickness is shifted by
  the published case-control Cohen's d (Schmaal et al. 2016 subcortical, 2017 adult
  cortical thickness; ENIGMA Toolbox summary statistics shipped in
  ``brainmatch/data/enigma``), in units of the controls' SD at the patient's age, sex
  and site, so that the expected mean deviation z of patients equals d;
- **planted circuit deviations**: each patient carries 0-2 deviant circuits from
  :data:`PLANTABLE` (e.g. an under-active fronto-limbic regulation circuit), every
  feature of that circuit's measure shifted by ``circuit_effect`` SDs.

Everything generated is returned in :class:`Cohort` (``truth`` lists each patient's
planted circuits), so tests can check that the normative model recovers it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError

#: Circuits that can be planted as deviant in patients: (measure, direction).
PLANTABLE: dict[str, tuple[str, int]] = {
    "frontolimbic": ("activity", -1),
    "salience": ("activity", 1),
    "reward": ("activity", -1),
    "default_mode": ("within", 1),
}

_DK_CORTEX = (
    "bankssts caudalanteriorcingulate caudalmiddlefrontal cuneus entorhinal fusiform "
    "inferiorparietal inferiortemporal isthmuscingulate lateraloccipital lateralorbitofrontal "
    "lingual medialorbitofrontal middletemporal parahippocampal paracentral parsopercularis "
    "parsorbitalis parstriangularis pericalcarine postcentral posteriorcingulate precentral "
    "precuneus rostralanteriorcingulate rostralmiddlefrontal superiorfrontal superiorparietal "
    "superiortemporal supramarginal frontalpole temporalpole transversetemporal insula"
).split()
_SUBCORTEX = (
    "Thalamus_Proper",
    "Caudate",
    "Putamen",
    "Pallidum",
    "Hippocampus",
    "Amygdala",
    "Accumbens_area",
)
#: ENIGMA subcortical abbreviations -> aseg feature names (``vol__``).
_ENIGMA_SUB = {
    "thal": "Thalamus",
    "caud": "Caudate",
    "put": "Putamen",
    "pal": "Pallidum",
    "hippo": "Hippocampus",
    "amyg": "Amygdala",
    "accumb": "Accumbens_area",
    "LatVent": "Lateral_Ventricle",
}


def region_names() -> list[str]:
    """The 82 Desikan-Killiany regions (68 cortical + 14 subcortical), feature form."""
    ctx = [f"ctx_{h}_{n}" for h in ("lh", "rh") for n in _DK_CORTEX]
    sub = [f"{side}_{n}" for side in ("Left", "Right") for n in _SUBCORTEX]
    return ctx + sub


@functools.lru_cache(maxsize=1)
def enigma_effects() -> dict[str, float]:
    """ENIGMA-MDD case-control Cohen's d per feature column (``vol__`` / ``thick__``)."""
    folder = resources.files("brainmatch").joinpath("data/enigma")
    sub = pd.read_csv(str(folder.joinpath("mdd_case-controls_SubVol.csv")))
    out: dict[str, float] = {}
    for s, d in zip(sub["Structure"], sub["d_icv"], strict=True):
        side = "Left" if s[0] == "L" else "Right"
        out[f"vol__{side}_{_ENIGMA_SUB[s[1:]]}"] = float(d)
    ct = pd.read_csv(str(folder.joinpath("mddadult_case-controls_CortThick.csv")))
    for s, d in zip(ct["Structure"], ct["d_icv"], strict=True):
        hemi = "lh" if s.startswith("L_") else "rh"
        out[f"thick__ctx_{hemi}_{s[2:]}"] = float(d)
    return out


@dataclass
class Cohort:
    """A drawn cohort.

    Attributes
    ----------
    features : DataFrame
        ``participant_id`` + feature columns.
    participants : DataFrame
        ``participant_id``, ``age``, ``sex``, ``site``, ``group`` (control / patient).
    truth : DataFrame
        Per patient: ``planted`` (``;``-joined circuit keys).
    enigma_d : dict
        The Cohen's d each structural feature was shifted by in patients.
    parameters : dict
    """

    features: pd.DataFrame
    participants: pd.DataFrame
    truth: pd.DataFrame
    enigma_d: dict[str, float]
    parameters: dict[str, Any] = field(default_factory=dict)


def feature_layout(connectivity: bool = True) -> list[str]:
    """Feature columns of a cohort."""
    regions = region_names()
    cols = [f"amp__{r}" for r in regions]
    if connectivity:
        cols += [
            f"conn__{regions[i]}__{regions[j]}"
            for i in range(len(regions))
            for j in range(i + 1, len(regions))
        ]
    cols += sorted(c for c in enigma_effects() if c.startswith("vol__"))
    cols += [f"thick__ctx_{h}_{n}" for h in ("lh", "rh") for n in _DK_CORTEX]
    return cols


def draw_cohort(
    n_controls: int,
    n_patients: int = 0,
    *,
    n_sites: int = 3,
    seed: int = 0,
    connectivity: bool = True,
    circuit_effect: float = 1.5,
    age_range: tuple[float, float] = (18.0, 80.0),
    site_prefix: str = "site",
) -> Cohort:
    """Draw healthy controls and patients as a feature table (see the module docstring).

    Parameters
    ----------
    n_controls, n_patients : int
    n_sites : int
        Sites (scanners); everyone is spread evenly over them.
    seed : int
    connectivity : bool
        Include the 3321 connectivity edges (False: 82 activity + 16 volume + 68
        thickness features).
    circuit_effect : float
        Shift (in SDs) of the planted deviant circuits' features.
    age_range : (float, float)
        Uniform age range of everyone.
    """
    if n_controls < 1 or n_patients < 0:
        raise BrainmatchInputError("need at least one control and no negative patient count")
    if n_sites < 1:
        raise BrainmatchInputError(f"n_sites {n_sites}: need at least one site")
    from brainmatch.circuits import circuit_membership

    cols = feature_layout(connectivity)
    f = len(cols)
    rng = np.random.default_rng([seed, 1313])
    # per-feature generating parameters (fixed by seed, shared by controls and patients)
    kind = np.array([c.split("__")[0] for c in cols])
    structural = np.isin(kind, ["vol", "thick"])
    lin = np.where(structural, rng.normal(-0.35, 0.15, f), rng.normal(0.0, 0.15, f))
    quad = rng.normal(0.0, 0.08, f)
    sex_eff = rng.normal(0.0, 0.25, f)
    var_age = rng.normal(0.1, 0.08, f)
    site_loc = rng.normal(0.0, 0.3, (n_sites, f))
    site_scale = np.exp(rng.normal(0.0, 0.12, (n_sites, 1)) + rng.normal(0.0, 0.05, (n_sites, f)))
    base = np.where(
        kind == "amp",
        1.0,
        np.where(kind == "conn", 0.2, np.where(kind == "thick", 2.5, 3000.0)),
    ) * np.exp(rng.normal(0.0, 0.2, f))
    unit = np.where(kind == "conn", 0.12, np.where(kind == "thick", 0.1, 0.1 * base))
    loading = np.where(structural, 0.2, 0.3)  # shared person factor

    n = n_controls + n_patients
    width = max(4, len(str(n)))
    ids = [f"sub-c{i + 1:0{width}d}" for i in range(n_controls)] + [
        f"sub-p{i + 1:0{width}d}" for i in range(n_patients)
    ]
    group = np.array(["control"] * n_controls + ["patient"] * n_patients)
    age = rng.uniform(*age_range, n)
    sex = np.where(rng.random(n) < 0.55, "F", "M")
    site_idx = rng.permutation(np.arange(n) % n_sites)
    a = (age - 50.0) / 15.0
    mean_std = lin * a[:, None] + quad * (a[:, None] ** 2 - 1) + sex_eff * (sex == "M")[:, None]
    mean_std = mean_std + site_loc[site_idx]
    sd = np.exp(var_age * a[:, None]) * site_scale[site_idx]
    g = rng.standard_normal((n, 1))
    e = rng.standard_normal((n, f))
    noise = loading * g + np.sqrt(1 - loading**2) * e
    shift = np.zeros((n, f))
    patients = np.flatnonzero(group == "patient")
    d = enigma_effects()
    d_vec = np.array([d.get(c, 0.0) for c in cols])
    shift[patients] += d_vec
    member = circuit_membership(cols)
    keys = list(PLANTABLE)
    planted: list[str] = []
    for i in patients:
        k = rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3])
        chosen = sorted(rng.choice(keys, size=k, replace=False).tolist()) if k else []
        for key in chosen:
            measure, sign = PLANTABLE[key]
            shift[i, member[key][measure]] += sign * circuit_effect
        planted.append(";".join(chosen))
    values = base + unit * (mean_std + sd * (noise + shift))
    features = pd.DataFrame(values, columns=cols)
    features.insert(0, "participant_id", ids)
    participants = pd.DataFrame(
        {
            "participant_id": ids,
            "age": age.round(1),
            "sex": sex,
            "site": [f"{site_prefix}{s + 1:02d}" for s in site_idx],
            "group": group,
        }
    )
    truth = pd.DataFrame({"participant_id": [ids[i] for i in patients], "planted": planted})
    params = {
        "n_controls": n_controls,
        "n_patients": n_patients,
        "n_sites": n_sites,
        "seed": seed,
        "circuit_effect": circuit_effect,
        "plantable": {k: list(v) for k, v in PLANTABLE.items()},
        "enigma_source": "ENIGMA-MDD summary statistics (ENIGMA Toolbox, d66a7ef): "
        "mdd_case-controls_SubVol.csv, mddadult_case-controls_CortThick.csv",
    }
    return Cohort(features, participants, truth, {c: d[c] for c in cols if c in d}, params)


# --- healthy controls in a simulated BIDS trial (``brainmatch simulate --n-controls``) -------
#: Circuits planted as deviant in the images of a trial with controls (activity only: the
#: image simulator changes regional amplitude), with the amplitude factor per region.
IMAGE_PLANTABLE: dict[str, float] = {"frontolimbic": 0.7, "salience": 1.4, "reward": 0.7}


def _image_regions(circuit: str) -> list[str]:
    """Image (Desikan-Killiany) region names of a circuit."""
    from brainmatch.circuits import CIRCUITS, region_of
    from brainmatch.features.extract import feature_name
    from brainmatch.simulate.images import hcp_region_names

    members = set(CIRCUITS[circuit].regions)
    out = []
    for name in hcp_region_names():
        found = region_of(feature_name(name))
        if found is not None and members.intersection(found[0]):
            out.append(name)
    return out


def add_controls(trial: Any) -> Any:
    """Add ``trial.spec.n_controls`` healthy controls to a drawn trial (in place; returned).

    Controls are spread over the trial's sites, with age and sex drawn as the patients'
    and the same individual variation of the biomarkers, but no arm, no outcome, one
    scan, and no depression effect (their hippocampal biomarker is offset by the ENIGMA-MDD
    d that the FreeSurfer simulator gives everyone).  With ``dwi`` / ``task_fmri`` they carry
    the moderator biomarkers too (own random stream; shown in their images, moderating no
    outcome since they are untreated).  Patients get 0-2 planted deviant
    circuits (:data:`IMAGE_PLANTABLE`, in ``ground_truth.tsv`` column ``planted``),
    expressed as regional amplitude changes in their scans.  ``participants.tsv`` gains a
    ``group`` column.
    """
    from brainmatch.simulate.freesurfer import MDD_HIPPOCAMPUS_D

    spec = trial.spec
    n_c = int(getattr(spec, "n_controls", 0) or 0)
    if n_c <= 0:
        return trial
    rng = np.random.default_rng([spec.seed, 1313])
    truth = trial.truth
    n_p = len(truth)
    keys = list(IMAGE_PLANTABLE)
    planted = []
    for _ in range(n_p):
        k = rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3])
        planted.append(
            ";".join(sorted(rng.choice(keys, size=k, replace=False).tolist())) if k else ""
        )
    truth["group"] = "patient"
    truth["planted"] = planted
    width = max(3, len(str(n_c)))
    ids = [f"sub-ctrl{i + 1:0{width}d}" for i in range(n_c)]
    sites = trial.sites["site"].to_numpy()
    controls = pd.DataFrame(
        {
            "participant_id": ids,
            "site": rng.permutation(np.resize(sites, n_c)),
            "arm": pd.NA,
            "age": rng.integers(18, 66, n_c),
            "sex": np.where(rng.random(n_c) < 0.62, "F", "M"),
            "hamd_baseline": pd.NA,
            "dropout": True,  # no follow-up scan or outcome
            "insula_activity": rng.standard_normal(n_c).round(6),
            "scc_connectivity": rng.standard_normal(n_c).round(6),
            # cancels the ENIGMA-MDD hippocampal d the FreeSurfer simulator adds to everyone
            "hippocampal_volume": (rng.standard_normal(n_c) - MDD_HIPPOCAMPUS_D).round(6),
            "motion_fd_scale": np.exp(rng.normal(np.log(0.12), 0.45, n_c)).round(6),
            "group": "control",
            "planted": "",
        }
    )
    # the DWI / task-fMRI moderator biomarkers the patients carry (their own stream, so
    # patients and the other control draws are unchanged); controls' images show them but,
    # untreated, they moderate nothing
    from brainmatch.simulate.moderators import NAMES as MODERATORS

    z = np.random.default_rng([spec.seed, 5, 1]).standard_normal((n_c, len(MODERATORS)))
    for j, name in enumerate(MODERATORS):
        if name in truth.columns:
            controls[name] = z[:, j].round(6)
    trial.truth = pd.concat([truth, controls], ignore_index=True)
    participants = trial.participants.copy()
    participants["group"] = "patient"
    extra = controls[["participant_id", "age", "sex", "site", "arm", "group"]]
    trial.participants = pd.concat([participants, extra], ignore_index=True)
    trial.parameters["controls"] = {
        "n_controls": n_c,
        "planted_circuits": {
            k: {"amplitude_factor": f, "regions": _image_regions(k)}
            for k, f in IMAGE_PLANTABLE.items()
        },
        "hippocampus": "controls' hippocampal biomarker offset by -d (ENIGMA-MDD d = "
        f"{MDD_HIPPOCAMPUS_D}) so that only patients carry the depression effect",
        "moderators": "controls' cingulum_fa / amygdala_reactivity (with --dwi / --task-fmri) "
        "are N(0, 1) from their own stream and shape their images; untreated, they moderate "
        "no outcome",
        "followup": "controls are not followed up (no rows in phenotype/followup.tsv)",
    }
    return trial


def planted_amplitude_changes(row: Any) -> tuple[tuple[str, float], ...]:
    """Image amplitude changes of a patient's planted circuits (``()`` for anyone else)."""
    planted = getattr(row, "planted", "")
    if not isinstance(planted, str) or not planted:
        return ()
    changes = []
    for key in planted.split(";"):
        factor = IMAGE_PLANTABLE[key]
        changes += [(name, factor) for name in _image_regions(key)]
    return tuple(changes)
