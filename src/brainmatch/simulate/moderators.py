"""Diffusion and task-activation moderators of the simulated trial (opt-in).

With ``TrialSpec(dwi=True)`` and / or ``TrialSpec(task_fmri=True)`` each patient gets two
more true biomarkers, standardised N(0, 1), drawn from their own random stream (so the
rest of the trial is unchanged):

- ``cingulum_fa``: white-matter integrity of the cingulum (left and right FA
  ``0.52 + 0.03 z`` in the simulated DWI).  Higher FA gives a better outcome on
  medication: FA of the cingulum and other tracts predicted antidepressant remission in
  iSPOT-D (Korgaonkar et al. 2014; details unverified, see SCIENCE.md);
- ``amygdala_reactivity``: the amygdala's response to emotional faces against shapes in a
  block-design task run (``task-faces``; faces blocks raise both amygdalae by
  ``1.0 + 0.4 z`` % signal over shapes).  Higher reactivity gives a better outcome on
  psychotherapy (pre-treatment amygdala / subgenual cingulate reactivity predicted CBT
  response: Siegle et al. 2006, Fu et al. 2008; direction assumed, details unverified).

Each adds ``beta * loading[arm] * z`` to the expected week-8 score (lower is better),
with ``beta`` the trial's interaction scale and loadings by arm class below, so the
moderators are as strong as the resting-state ones.  A moderator is drawn only when its
modality is simulated; the truth table holds it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Loadings (cingulum_fa, amygdala_reactivity) by arm class; negative: higher is better.
LOADINGS: dict[str, tuple[float, float]] = {
    "medication": (-1.0, 0.0),
    "psychotherapy": (0.0, -1.0),
    "mindfulness": (0.0, -0.5),
    "control": (0.0, 0.0),
    "other": (0.0, 0.0),
}
NAMES = ("cingulum_fa", "amygdala_reactivity")
CINGULUM_FA_MEAN, CINGULUM_FA_PER_SD = 0.52, 0.03
AMYGDALA_FACES_PCT, AMYGDALA_PER_SD = 1.0, 0.4
#: Other regions' faces / shapes responses (% signal change; assumed typical values).
TASK_RESPONSES: dict[str, tuple[float, float]] = {
    "ctx-lh-fusiform": (0.8, 0.4),
    "ctx-rh-fusiform": (0.9, 0.4),
    "ctx-lh-lateraloccipital": (0.6, 0.6),
    "ctx-rh-lateraloccipital": (0.6, 0.6),
}
AMYGDALA_REGIONS = ("Left-Amygdala", "Right-Amygdala")
TASK_NAME = "faces"
BLOCK_SECONDS = 18.0


def draw_moderators(
    spec: Any, arm_classes: list[str], beta: float, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The extra biomarkers (name -> z) and their addition to mu (n x arms)."""
    bio: dict[str, np.ndarray] = {}
    add = np.zeros((n, len(arm_classes)))
    if not (getattr(spec, "dwi", False) or getattr(spec, "task_fmri", False)):
        return bio, add
    rng = np.random.default_rng([spec.seed, 5])
    z = rng.standard_normal((n, 2))
    loadings = np.array([LOADINGS.get(k, (0.0, 0.0)) for k in arm_classes])  # (arms, 2)
    for j, (name, on) in enumerate(zip(NAMES, (spec.dwi, spec.task_fmri), strict=True)):
        if on:
            bio[name] = z[:, j]
            add += beta * np.outer(z[:, j], loadings[:, j])
    return bio, add


def tract_fa(cingulum_z: float) -> tuple[tuple[str, float], ...]:
    """The tract FA a patient's DWI carries (cingulum moderated; others typical)."""
    fa = CINGULUM_FA_MEAN + CINGULUM_FA_PER_SD * cingulum_z
    return (("Cingulum_L", fa), ("Cingulum_R", fa))


def faces_events(n_volumes: int, tr: float) -> list[tuple[float, float, str]]:
    """Alternating shapes / faces blocks of 18 s filling the run (onset, duration, type)."""
    out = []
    t, k = 0.0, 0
    end = n_volumes * tr
    while t + BLOCK_SECONDS <= end:
        out.append((t, BLOCK_SECONDS, "shapes" if k % 2 == 0 else "faces"))
        t += BLOCK_SECONDS
        k += 1
    return out


def task_signals(
    region_names: list[str], amygdala_z: float, n_volumes: int, tr: float
) -> np.ndarray:
    """Percent-signal task responses (volumes x regions) of the faces run."""
    from nilearn.glm.first_level import compute_regressor

    frame_times = np.arange(n_volumes) * tr
    events = faces_events(n_volumes, tr)
    regs = {}
    for kind in ("faces", "shapes"):
        ev = np.array([(o, d, 1.0) for o, d, t in events if t == kind]).T
        regs[kind] = compute_regressor(ev, "glover", frame_times)[0][:, 0]
    out = np.zeros((n_volumes, len(region_names)), dtype=np.float32)
    idx = {n: i for i, n in enumerate(region_names)}
    amyg = AMYGDALA_FACES_PCT + AMYGDALA_PER_SD * amygdala_z
    for name in AMYGDALA_REGIONS:
        out[:, idx[name]] = 0.1 * regs["shapes"] + (0.1 + amyg) * regs["faces"]
    for name, (faces, shapes) in TASK_RESPONSES.items():
        out[:, idx[name]] = faces * regs["faces"] + shapes * regs["shapes"]
    peak = max(float(np.abs(regs["faces"]).max()), 1e-12)
    return out / peak  # a block response reaches the stated amplitude


def describe(spec: Any) -> dict[str, Any]:
    """The moderators' part of ``ground_truth.json``."""
    out: dict[str, Any] = {}
    if getattr(spec, "dwi", False):
        out["cingulum_fa"] = (
            f"FA of left/right cingulum = {CINGULUM_FA_MEAN} + {CINGULUM_FA_PER_SD} z in the "
            "simulated DWI; mu += beta * loading[arm] * z, loadings "
            + ", ".join(f"{k} {v[0]:g}" for k, v in LOADINGS.items())
        )
    if getattr(spec, "task_fmri", False):
        out["amygdala_reactivity"] = (
            f"faces - shapes response of both amygdalae = {AMYGDALA_FACES_PCT} + "
            f"{AMYGDALA_PER_SD} z % signal in task-{TASK_NAME} runs (18 s blocks), the block "
            "response's peak (a first-level GLM's beta, per unit of nilearn's glover "
            "regressor, is this divided by the regressor's peak); "
            "mu += beta * loading[arm] * z, loadings "
            + ", ".join(f"{k} {v[1]:g}" for k, v in LOADINGS.items())
        )
    return out


__all__ = [
    "LOADINGS",
    "NAMES",
    "TASK_NAME",
    "describe",
    "draw_moderators",
    "faces_events",
    "task_signals",
    "tract_fa",
]
