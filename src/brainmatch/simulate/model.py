"""The generative model of a simulated trial: subjects, sites, biomarkers and outcomes.

Everything here is tabular and fast; :mod:`brainmatch.simulate.images` turns each
subject's parameters into fMRIPrep-style images.  The model (all defaults are recorded
in ``ground_truth.json``):

*Design.*  ``n_subjects`` patients, spread evenly over ``n_sites`` sites, randomised to
the arms in permuted blocks within each site.

*Biomarkers* (true, standardised N(0, 1), independent):

- ``insula_activity``: resting activity of the right anterior insula, expressed in the
  images as the amplitude of the right insula's signal (McGrath et al. 2013);
- ``scc_connectivity``: summed resting connectivity of the subcallosal / rostral anterior
  cingulate with left ventrolateral prefrontal cortex, left insula and left ventromedial
  prefrontal cortex, expressed as a shift of those edges' Fisher z (Dunlop et al. 2017);
- ``hippocampal_volume``: a prognostic (not prescriptive) marker, smaller volume giving a
  worse outcome under every arm; expressed in the FreeSurfer volumes (ENIGMA-MDD).

*Outcome* (HAMD-17 at week 8) of patient i under arm a::

    mu_ia = 22 + 0.5 (baseline_i - 22) - drop_a + site_i + 0.03 (age_i - 40)
            - 0.8 hippocampal_volume_i
            + beta (l_a1 insula_activity_i + l_a2 scc_connectivity_i)
    y_ia  = clip(round(mu_ia + e_i + e_ia), 0, 52)

with ``e_i`` shared by all arms (70 % of the residual variance) and ``e_ia`` arm-specific;
residual SD ``sigma = 6`` points.  ``beta = effect_size * sigma / (2 sqrt 2)``, so that for
a psychotherapy arm against a medication arm the SD of the true individual advantage
(the true PAI) is exactly ``effect_size * sigma``: effect size 0.5 (``realistic``) gives a
PAI SD of 3 points, about a third of patients with |PAI| >= 3 as in Webb et al. 2019.

*Observed data.*  ``hamd_week8`` is ``y`` under the arm received, missing for dropouts
(15 % on average, more at higher baseline severity); ``remission`` is ``hamd_week8 <= 7``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError
from brainmatch.simulate.arms import Arm, make_arms, n_other, parse_arms

#: Named effect sizes (SD of the true PAI in units of the residual SD).
EFFECT_SIZES: dict[str, float] = {"null": 0.0, "realistic": 0.5, "strong": 1.2}

RESIDUAL_SD = 6.0
SHARED_NOISE_FRACTION = 0.7
BASELINE_MEAN, BASELINE_SD = 22.0, 4.5
BIOMARKERS = ("insula_activity", "scc_connectivity", "hippocampal_volume")


def parse_effect_size(value: str | float) -> float:
    """Turn ``--effect-size`` (a name in :data:`EFFECT_SIZES` or a number >= 0) into a float."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in EFFECT_SIZES:
            return EFFECT_SIZES[key]
        try:
            number = float(key)
        except ValueError:
            raise BrainmatchInputError(
                f"--effect-size {value!r}: expected a number >= 0 or one of "
                f"{', '.join(EFFECT_SIZES)}"
            ) from None
    else:
        number = float(value)
    if not math.isfinite(number) or number < 0 or number > 5:
        raise BrainmatchInputError(f"--effect-size {value!r}: must be between 0 and 5")
    return number


def interaction_scale(effect_size: float) -> float:
    """HAMD points per biomarker SD for a loading of 1 (``beta`` in the module docstring)."""
    return effect_size * RESIDUAL_SD / (2.0 * math.sqrt(2.0))


@dataclass(frozen=True)
class TrialSpec:
    """Options of a simulated trial (what ``brainmatch simulate`` takes).

    Validated on construction; every error names the option.
    """

    n_subjects: int = 60
    n_sites: int = 3
    arms: tuple[str, ...] = ("CBT", "SSRI")
    resolution: int = 4
    n_volumes: int = 100
    tr: float = 2.0
    seed: int = 0
    effect_size: float = EFFECT_SIZES["realistic"]
    sessions: int = 1
    dropout_rate: float = 0.15
    task: str = "rest"
    #: QSIPrep-style DWI with a cingulum-FA moderator (:mod:`brainmatch.simulate.moderators`)
    dwi: bool = False
    #: an emotional-faces task run per session with an amygdala-reactivity moderator
    task_fmri: bool = False
    #: FreeSurfer ``lh/rh.aparc.stats`` (cortical thickness, area, volume) beside aseg
    cortex: bool = False
    n_controls: int = 0
    followup: bool = False  # relapse follow-up (simulate/followup.py)
    durability_effect: float = 0.6

    def __post_init__(self) -> None:
        if self.n_subjects < 2:
            raise BrainmatchInputError(f"--n-subjects {self.n_subjects}: need at least 2 subjects")
        if self.n_subjects > 100_000:
            raise BrainmatchInputError(f"--n-subjects {self.n_subjects}: at most 100000")
        if self.n_sites < 1:
            raise BrainmatchInputError(f"--sites {self.n_sites}: need at least 1 site")
        if self.n_sites > self.n_subjects:
            raise BrainmatchInputError(
                f"--sites {self.n_sites}: more sites than subjects ({self.n_subjects})"
            )
        parse_arms(",".join(self.arms))
        if self.resolution not in (2, 3, 4):
            raise BrainmatchInputError(f"--resolution {self.resolution}: must be 2, 3 or 4 (mm)")
        if self.n_volumes < 20:
            raise BrainmatchInputError(
                f"--n-volumes {self.n_volumes}: need at least 20 volumes for a usable time series"
            )
        if self.n_volumes > 5000:
            raise BrainmatchInputError(f"--n-volumes {self.n_volumes}: at most 5000")
        if not (0.1 <= self.tr <= 10.0):
            raise BrainmatchInputError(f"--tr {self.tr}: must be between 0.1 and 10 seconds")
        if self.sessions not in (1, 2):
            raise BrainmatchInputError(
                f"--sessions {self.sessions}: 1 (baseline scan only) or 2 (ses-pre and ses-post)"
            )
        if not (0.0 <= self.dropout_rate < 0.9):
            raise BrainmatchInputError(f"dropout rate {self.dropout_rate}: must be in [0, 0.9)")
        if self.seed < 0 or self.seed >= 2**32:
            raise BrainmatchInputError(f"--seed {self.seed}: must be between 0 and 2**32 - 1")
        parse_effect_size(self.effect_size)
        if not (0 <= self.n_controls <= 100_000):
            raise BrainmatchInputError(f"--n-controls {self.n_controls}: must be in 0..100000")
        if not (0.0 <= self.durability_effect <= 3.0):
            raise BrainmatchInputError(
                f"--durability-effect {self.durability_effect}: must be between 0 and 3"
            )


@dataclass
class Trial:
    """A drawn trial: the tables a user sees and the truth behind them.

    Attributes
    ----------
    spec : TrialSpec
    arms : list of Arm
    sites : pandas.DataFrame
        One row per site with its scanner and rater effects.
    truth : pandas.DataFrame
        One row per subject: design, true biomarkers, true outcome under every arm.
    participants : pandas.DataFrame
        BIDS ``participants.tsv``.
    outcomes : pandas.DataFrame
        ``phenotype/outcomes.tsv``.
    parameters : dict
        Every generating parameter (written to ``ground_truth.json``).
    """

    spec: TrialSpec
    arms: list[Arm]
    sites: pd.DataFrame
    truth: pd.DataFrame
    participants: pd.DataFrame
    outcomes: pd.DataFrame
    parameters: dict[str, Any] = field(default_factory=dict)


def subject_ids(n: int) -> list[str]:
    """BIDS participant IDs ``sub-001`` ... (zero-padded to the width of ``n``)."""
    width = max(3, len(str(n)))
    return [f"sub-{i + 1:0{width}d}" for i in range(n)]


def _block_randomise(rng: np.random.Generator, site: np.ndarray, n_arms: int) -> np.ndarray:
    arm = np.empty(site.size, dtype=int)
    for s in np.unique(site):
        idx = np.flatnonzero(site == s)
        blocks = -(-idx.size // n_arms)
        seq = np.concatenate([rng.permutation(n_arms) for _ in range(blocks)])[: idx.size]
        arm[idx] = seq
    return arm


def draw_trial(spec: TrialSpec) -> Trial:
    """Draw subjects, sites, biomarkers and potential outcomes for ``spec``.

    Deterministic for ``spec.seed``; images use independent streams keyed by subject,
    so the tables do not depend on image size or on parallelism.
    """
    names = list(spec.arms)
    effect = parse_effect_size(spec.effect_size)
    rng = np.random.default_rng([spec.seed, 0])
    other = [tuple(rng.normal(0.0, 1.0, 2).round(3)) for _ in range(n_other(names))]
    arms = make_arms(names, [(float(a), float(b)) for a, b in other])
    n, k = spec.n_subjects, len(arms)
    ids = subject_ids(n)

    # sites: scanner gain/offset/noise on images, volume bias on FreeSurfer, rater shift
    site_names = [f"site{j + 1:02d}" for j in range(spec.n_sites)]
    sites = pd.DataFrame(
        {
            "site": site_names,
            "bold_gain": rng.uniform(0.8, 1.25, spec.n_sites).round(4),
            "bold_offset": rng.normal(0.0, 300.0, spec.n_sites).round(2),
            "noise_scale": rng.uniform(0.8, 1.3, spec.n_sites).round(4),
            "fc_shift": rng.normal(0.0, 0.04, spec.n_sites).round(4),
            "volume_scale": rng.normal(1.0, 0.03, spec.n_sites).round(4),
            "outcome_shift": rng.normal(0.0, 1.0, spec.n_sites).round(3),
        }
    )
    site_idx = np.sort(np.arange(n) % spec.n_sites)
    site_idx = rng.permutation(site_idx)
    arm_idx = _block_randomise(rng, site_idx, k)

    age = rng.integers(18, 66, n)
    sex = np.where(rng.random(n) < 0.62, "F", "M")
    baseline = np.clip(np.round(rng.normal(BASELINE_MEAN, BASELINE_SD, n)), 14, 40).astype(int)
    bio = rng.standard_normal((n, len(BIOMARKERS)))
    motion = np.exp(rng.normal(np.log(0.12), 0.45, n))  # median FD scale (mm)

    beta = interaction_scale(effect)
    loadings = np.array([a.loadings for a in arms])  # (k, 2)
    drops = np.array([a.mean_drop for a in arms])
    site_shift = sites["outcome_shift"].to_numpy()[site_idx]
    prognostic = 22.0 + 0.5 * (baseline - 22.0) + site_shift + 0.03 * (age - 40.0) - 0.8 * bio[:, 2]
    mu = prognostic[:, None] - drops[None, :] + beta * (bio[:, :2] @ loadings.T)
    from brainmatch.simulate.moderators import describe, draw_moderators

    extra_bio, extra_mu = draw_moderators(spec, [a.klass for a in arms], beta, n)
    mu = mu + extra_mu
    shared = rng.normal(0.0, RESIDUAL_SD * math.sqrt(SHARED_NOISE_FRACTION), n)
    own = rng.normal(0.0, RESIDUAL_SD * math.sqrt(1 - SHARED_NOISE_FRACTION), (n, k))
    y = np.clip(np.round(mu + shared[:, None] + own), 0, 52).astype(int)

    logit = (
        math.log(spec.dropout_rate / (1 - spec.dropout_rate)) if spec.dropout_rate > 0 else -np.inf
    )
    p_drop = 1.0 / (1.0 + np.exp(-(logit + 0.05 * (baseline - BASELINE_MEAN))))
    dropout = rng.random(n) < p_drop

    arm_names = np.array(names)
    received = arm_names[arm_idx]
    observed = y[np.arange(n), arm_idx].astype(float)
    observed[dropout] = np.nan

    truth = pd.DataFrame(
        {
            "participant_id": ids,
            "site": np.array(site_names)[site_idx],
            "arm": received,
            "age": age,
            "sex": sex,
            "hamd_baseline": baseline,
            "dropout": dropout,
            "insula_activity": bio[:, 0].round(6),
            "scc_connectivity": bio[:, 1].round(6),
            "hippocampal_volume": bio[:, 2].round(6),
            "motion_fd_scale": motion.round(6),
        }
    )
    for name, z in extra_bio.items():
        truth[name] = z.round(6)
    for j, a in enumerate(names):
        truth[f"mu__{a}"] = mu[:, j].round(4)
    for j, a in enumerate(names):
        truth[f"hamd_week8__{a}"] = y[:, j]
    order = np.argsort(mu, axis=1, kind="stable")
    truth["oracle_arm"] = arm_names[order[:, 0]]
    truth["oracle_advantage"] = (
        np.take_along_axis(mu, order[:, 1:2], 1)[:, 0]
        - np.take_along_axis(mu, order[:, :1], 1)[:, 0]
    ).round(4)

    participants = truth[["participant_id", "age", "sex", "site", "arm"]].copy()
    outcomes = pd.DataFrame(
        {
            "participant_id": ids,
            "hamd_baseline": baseline,
            "hamd_week8": pd.array(np.where(dropout, pd.NA, observed), dtype="Int64"),
        }
    )
    remission = (outcomes["hamd_week8"] <= 7).astype("Int64")
    outcomes["remission"] = remission.where(outcomes["hamd_week8"].notna(), pd.NA)

    parameters: dict[str, Any] = {
        "spec": asdict(spec),
        "effect_size": effect,
        "interaction_scale_beta": round(beta, 6),
        "residual_sd": RESIDUAL_SD,
        "shared_noise_fraction": SHARED_NOISE_FRACTION,
        "baseline": {"mean": BASELINE_MEAN, "sd": BASELINE_SD, "range": [14, 40]},
        "outcome_model": (
            "mu = 22 + 0.5*(baseline-22) - drop[arm] + site_shift + 0.03*(age-40) "
            "- 0.8*hippocampal_volume + beta*(l1[arm]*insula_activity + l2[arm]*scc_connectivity);"
            " y = clip(round(mu + e_shared + e_arm), 0, 52)"
        ),
        "arms": [asdict(a) for a in arms],
        "sites": sites.to_dict(orient="records"),
        "dropout": {"rate": spec.dropout_rate, "logit_slope_per_baseline_point": 0.05},
        "biomarkers": {
            "insula_activity": "amplitude of the right insula signal x exp(0.35 z) (McGrath 2013)",
            "scc_connectivity": (
                "Fisher-z shift of 0.2 z on edges between L/R rostral anterior cingulate and "
                "L insula, L pars opercularis, L pars triangularis, L medial orbitofrontal "
                "(Dunlop 2017)"
            ),
            "hippocampal_volume": "left/right hippocampus volume z in aseg.stats (prognostic)",
            **describe(spec),
        },
    }
    return Trial(
        spec=spec,
        arms=arms,
        sites=sites,
        truth=truth,
        participants=participants,
        outcomes=outcomes,
        parameters=parameters,
    )
