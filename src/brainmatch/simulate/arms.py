"""Treatment arms of a simulated trial: their class, mean effect and biomarker loadings.

An arm's *class* decides how the two prescriptive biomarkers act on its outcome:

- ``psychotherapy`` (CBT, psychodynamic, IPT, EMDR, DBT, behavioural activation, ...):
  low right anterior-insula activity favours it (McGrath et al. 2013, JAMA Psychiatry),
  and positive subcallosal-cingulate connectivity favours it (Dunlop et al. 2017, Am J
  Psychiatry);
- ``medication`` (SSRI, SNRI, escitalopram, sertraline, duloxetine, ...): the reverse;
- ``mindfulness``-type therapies: psychotherapy loadings at half weight;
- ``control`` (placebo, wait-list, care as usual): no interaction;
- ``other`` (any other name): loadings drawn from the seed and recorded in the truth file.

Loadings are in units of the HAMD-17 points per biomarker SD at effect size 1 (see
:func:`brainmatch.simulate.model.interaction_scale`); a positive loading means that a
higher biomarker gives a *higher* (worse) week-8 score under that arm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from brainmatch.errors import BrainmatchInputError

#: Mean HAMD-17 drop from baseline to week 8, by arm name (lower case).  CBT 10.2,
#: escitalopram 11.1 and duloxetine 11.2 are the PReDICT trial's observed drops (Dunlop
#: et al. 2017, N = 344).  The others are assumptions of this simulator, ordered as the
#: meta-analytic literature orders them; they are not published point estimates.
MEAN_DROP: dict[str, float] = {
    "cbt": 10.2,
    "ssri": 11.1,
    "escitalopram": 11.1,
    "sertraline": 11.1,
    "fluoxetine": 11.1,
    "snri": 11.2,
    "duloxetine": 11.2,
    "venlafaxine": 11.2,
    "medication": 11.1,
    "antidepressant": 11.1,
    "psychodynamic": 9.6,
    "ipt": 9.8,
    "ba": 10.0,
    "emdr": 9.5,
    "dbt": 9.5,
    "act": 9.3,
    "mindfulness": 9.3,
    "mbct": 9.3,
    "placebo": 8.0,
    "cau": 7.0,
    "tau": 7.0,
    "waitlist": 4.0,
    "wl": 4.0,
}

_CLASS_OF: dict[str, str] = {
    **dict.fromkeys(
        ["cbt", "psychodynamic", "ipt", "ba", "emdr", "dbt", "therapy", "psychotherapy"],
        "psychotherapy",
    ),
    **dict.fromkeys(
        [
            "ssri",
            "snri",
            "escitalopram",
            "sertraline",
            "fluoxetine",
            "duloxetine",
            "venlafaxine",
            "medication",
            "antidepressant",
        ],
        "medication",
    ),
    **dict.fromkeys(["mindfulness", "mbct", "act"], "mindfulness"),
    **dict.fromkeys(["placebo", "cau", "tau", "waitlist", "wl"], "control"),
}

#: Loadings (insula activity, subcallosal-cingulate connectivity) by class.
CLASS_LOADINGS: dict[str, tuple[float, float]] = {
    "psychotherapy": (1.0, -1.0),
    "medication": (-1.0, 1.0),
    "mindfulness": (0.5, -0.5),
    "control": (0.0, 0.0),
}

#: Mean drop for an arm name the simulator does not know.
DEFAULT_DROP = 10.0

_ARM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class Arm:
    """One arm of the simulated trial.

    Attributes
    ----------
    name : str
        As given by the user (used in column names such as ``hamd_week8__CBT``).
    klass : str
        ``psychotherapy``, ``medication``, ``mindfulness``, ``control`` or ``other``.
    mean_drop : float
        Expected HAMD-17 drop from baseline at week 8 for an average patient.
    loadings : tuple of float
        (insula activity, SCC connectivity) interaction loadings.
    """

    name: str
    klass: str
    mean_drop: float
    loadings: tuple[float, float]


def parse_arms(text: str) -> list[str]:
    """Parse a comma-separated arm list such as ``"CBT,SSRI,mindfulness"``.

    Raises
    ------
    BrainmatchInputError
        If the list has fewer than two arms, an empty entry, a duplicate (case-insensitive)
        or a name that is not a letter followed by letters and digits (names become
        column names and BIDS-friendly labels).
    """
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise BrainmatchInputError(
            f"--arms {text!r}: expected a comma-separated list of names such as 'CBT,SSRI' "
            "(found an empty entry)"
        )
    bad = [p for p in parts if not _ARM_NAME.match(p)]
    if bad:
        raise BrainmatchInputError(
            f"--arms {text!r}: arm names must start with a letter and contain only letters "
            f"and digits (bad: {', '.join(repr(b) for b in bad)})"
        )
    lowered = [p.lower() for p in parts]
    dups = sorted({p for p in lowered if lowered.count(p) > 1})
    if dups:
        raise BrainmatchInputError(f"--arms {text!r}: duplicate arm(s): {', '.join(dups)}")
    if len(parts) < 2:
        raise BrainmatchInputError(f"--arms {text!r}: a trial needs at least two arms")
    return parts


def make_arms(names: list[str], other_loadings: list[tuple[float, float]]) -> list[Arm]:
    """Build :class:`Arm` objects; ``other_loadings`` gives unknown names their loadings."""
    arms = []
    extra = iter(other_loadings)
    for name in names:
        key = name.lower()
        klass = _CLASS_OF.get(key, "other")
        loadings = CLASS_LOADINGS[klass] if klass != "other" else next(extra)
        arms.append(
            Arm(
                name=name,
                klass=klass,
                mean_drop=MEAN_DROP.get(key, DEFAULT_DROP),
                loadings=(float(loadings[0]), float(loadings[1])),
            )
        )
    return arms


def n_other(names: list[str]) -> int:
    """Number of arm names with no known class."""
    return sum(name.lower() not in _CLASS_OF for name in names)
