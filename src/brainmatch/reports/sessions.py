"""``report.html`` of ``brainmatch sessions``: rendered from a :class:`SessionsResult`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainmatch._io import write_text
from brainmatch.reports import file_to_data_uri, render
from brainmatch.sessions.analysis import SessionsResult

CITATIONS = {
    "smits": "Smits JAJ, Rosenfield D, Otto MW, et al. (2013). D-cycloserine enhancement of fear "
    "extinction is specific to successful exposure sessions: evidence from the treatment of "
    "height phobia. Biological Psychiatry 73(11):1054-1058.",
    "rosenfield": "Rosenfield D, Smits JAJ, Hofmann SG, et al. (2019). Changes in dosing and "
    "dose timing of D-cycloserine explain its apparent declining efficacy for augmenting "
    "exposure therapy for anxiety-related disorders: an individual participant-data "
    "meta-analysis. Journal of Anxiety Disorders 68:102149.",
    "meuret": "Meuret AE, Rosenfield D, Bhaskara L, et al. (2016). Timing matters: endogenous "
    "cortisol mediates benefits from early-day psychotherapy. Psychoneuroendocrinology "
    "74:197-202.",
    "nord": "Nord CL, Longley B, Dercon Q, et al. (2023). A transdiagnostic meta-analysis of "
    "acute augmentations to psychological therapy. Nature Mental Health 1:389-401. "
    "doi:10.1038/s44220-023-00048-6",
    "statsmodels": "Seabold S, Perktold J (2010). statsmodels: econometric and statistical "
    "modeling with Python. Proceedings of the 9th Python in Science Conference.",
    "lme4": "Bates D, Mächler M, Bolker B, Walker S (2015). Fitting linear mixed-effects models "
    "using lme4. Journal of Statistical Software 67(1):1-48.",
}


def methods_text(res: SessionsResult) -> tuple[str, list[str]]:
    """The methods paragraph and the references it cites, in citation order."""
    keys: list[str] = []

    def cite(k: str) -> str:
        if k not in keys:
            keys.append(k)
        return f"[{keys.index(k) + 1}]"

    d = res.descriptives
    o = res.options
    brain = o["brain_moderators"]
    parts = [
        f"Session-level data of {d['n_participants']} participants ({d['n_sessions']} "
        f"sessions) were analysed with linear mixed models fitted by "
        f"{'restricted ' if o['reml'] else ''}maximum likelihood in statsmodels "
        f"{cite('statsmodels')} (MixedLM, whose estimates reproduce lme4 {cite('lme4')}), "
        f"with random intercepts and random session slopes per participant; when the default "
        f"optimiser (BFGS) did not converge cleanly, L-BFGS, Powell, Nelder-Mead and CG were "
        f"tried as well and the converged fit with the highest likelihood was kept.",
        *(
            [
                "Random slopes did not converge for the "
                + ", ".join(f"{k} ({m.random} random effects used)" for k, m in fallback)
                + " model(s)."
            ]
            if (fallback := [(k, m) for k, m in res.models.items() if m.random != "slopes"])
            else []
        ),
        "Within-session fear reduction (start minus end, SUDS) was modelled on session, "
        "starting fear, augmentation at that session, exercise before it and time of day.",
        f"Between-session carry-over was modelled as the return of fear from the end of one "
        f"session to the start of the next, on session, session success (the session's fear "
        f"reduction), augmentation and its interaction with session success, following the "
        f"finding that D-cycloserine helped only after successful sessions {cite('smits')}; "
        f"dosing more than {o['window_minutes']:g} minutes before the session and its "
        f"interaction with augmentation, as the individual-participant meta-analysis of "
        f"D-cycloserine trials suggested {cite('rosenfield')}; exercise before the session; "
        f"and time of day, since earlier-in-the-day sessions gave larger gains "
        f"{cite('meuret')}"
        + (
            f"; and the baseline brain measure(s) {', '.join(brain)} with their interaction "
            f"with augmentation"
            if brain
            else ""
        )
        + ".",
        "The augmentation effect per session is the difference between arms in fear at the "
        "start of each session from a model with session as a factor and its interaction "
        "with arm; the same model of the weekly symptom score gives the effect on the final "
        "outcome, and a model with the cumulative number of augmented sessions gives the "
        "dose-response.",
        f"Intervals are {round(o['level'] * 100)}% Wald intervals. Study-level effects of "
        f"such trials can be pooled with brainmatch meta --schema augmentation, as in the "
        f"meta-analysis of acute augmentations of psychological therapy {cite('nord')}.",
    ]
    return " ".join(parts), [CITATIONS[k] for k in keys]


def write_report(res: SessionsResult, out_dir: str | Path, title: str | None = None) -> Path:
    """Write the figures (PNG + SVG) and ``report.html`` into ``out_dir``.

    Parameters
    ----------
    res : SessionsResult
        The analysis.
    out_dir : str or Path
        Folder (normally the one :meth:`SessionsResult.save` wrote).
    title : str, optional
        Report title.

    Returns
    -------
    Path
        The report file.
    """
    import io

    import matplotlib.pyplot as plt

    from brainmatch._io import write_bytes
    from brainmatch.sessions import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[dict[str, str]] = []
    for name, fig in (
        ("trajectories", plots.trajectories(res)),
        ("moderators", plots.moderators(res)),
        ("dose_response", plots.dose_response(res)),
    ):
        if fig is None:
            continue
        for fmt in ("png", "svg"):
            buf = io.BytesIO()
            fig.savefig(
                buf,
                format=fmt,
                dpi=110,
                bbox_inches="tight",
                metadata={"Date": None} if fmt == "svg" else None,
            )
            write_bytes(out / f"{name}.{fmt}", buf.getvalue())
        plt.close(fig)
        figures.append({"name": f"{name}.png", "uri": file_to_data_uri(out / f"{name}.png")})
    methods, cites = methods_text(res)
    d: dict[str, Any] = res.to_dict()
    html = render(
        "sessions.html",
        title=title or "Session-level augmentation analysis",
        r=d,
        moderators=res.moderators().to_dict("records"),
        figures=figures,
        methods=methods,
        citations=cites,
    )
    path = out / "report.html"
    write_text(path, html)
    return path
