"""Session-level mixed models: truth recovery across seeds, null rate, engine vs MixedLM.

1. **Recovery**: ``--seeds`` simulated trials (``brainmatch simulate-sessions`` defaults:
   40 per arm, 8 sessions, realistic effects); for every planted moderator, the share of
   trials whose estimate has the true sign and whose 95% CI covers the true value
   (nominal 95%; Monte Carlo 95% band printed).
2. **Null**: the same number of trials with every planted moderator set to zero; the share
   of p < 0.05 per moderator (nominal 5%).
3. **Engine vs statsmodels MixedLM**: on the between-session formula of ``--engine-seeds``
   trials, brainmatch's engine (MixedLM with its optimiser chain) against
   ``smf.mixedlm(...).fit()`` with statsmodels' defaults, in the same process:
   convergence, largest difference in fixed effects and log-likelihood, and the time
   ratio (statsmodels time / engine time).  Also dietox (statsmodels' copy of the
   geepack data) with random intercepts and random slopes.

4. **Bridge**: ``--bridge-reps`` replications of the docs' nine-trial example: whether the
   two-stage pooled g (study effects -> REML) lies inside the one-stage IPD model's CI,
   their difference, and coverage of the mean true SMD.

Usage: ``python benchmarks/bench_sessions.py [--seeds 100] [--engine-seeds 20]
[--bridge-reps 40] [--parts recovery,null,engine,bridge]``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from brainmatch.sessions import SessionTrialSpec, analyse_sessions, draw_session_trial, fit_mixed
from brainmatch.sessions.analysis import model_frames
from brainmatch.sessions.schema import validate_sessions
from brainmatch.sessions.simulate import BRAIN

PLANTED = [
    ("between", "augmented:success", "augmentation x session success (Smits 2013)"),
    ("between", "augmented:window", "augmentation x dosed > 60 min before (Rosenfield 2019)"),
    ("between", "tod_c", "time of day, per hour (Meuret 2016)"),
    ("between", "exercise", "exercise before the session"),
    ("within", "tod_c", "time of day, per hour (Meuret 2016)"),
    ("within", "exercise", "exercise before the session"),
    ("between", BRAIN, "baseline vmPFC-amygdala connectivity"),
    ("between", f"augmented:{BRAIN}", "augmentation x connectivity"),
]


def _band(p: float, n: int) -> str:
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    return f"[{100 * (p - half):.1f}, {100 * (p + half):.1f}]"


def _study(seeds: int, moderators: bool) -> pd.DataFrame:
    rows = []
    for seed in range(seeds):
        spec = SessionTrialSpec(seed=10_000 + seed, moderators=moderators)
        trial = draw_session_trial(spec)
        data = trial.sessions.merge(trial.features, on="participant_id")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = analyse_sessions(data, brain_moderators=[BRAIN], effects=False)
        tab = res.moderators()
        truth = trial.truth_params["coefficients"]
        for model, term, _ in PLANTED:
            r = tab[(tab["model"] == model) & (tab["term"] == term)].iloc[0]
            true = truth[model][term]
            rows.append(
                {
                    "seed": seed,
                    "model": model,
                    "term": term,
                    "true": true,
                    "estimate": r.estimate,
                    "covered": r.ci_lb <= true <= r.ci_ub,
                    "sign": np.sign(r.estimate) == np.sign(true),
                    "flag": r.p < 0.05,
                    "random": res.models[model].random,
                }
            )
    return pd.DataFrame(rows)


def recovery(seeds: int) -> None:
    t0 = time.perf_counter()
    df = _study(seeds, True)
    print(f"1. recovery of planted moderators, {seeds} simulated trials (40 per arm, 8 sessions)")
    print(
        f"   {'model':8} {'term':34} {'true':>6} {'mean est':>9} {'right sign':>10} "
        f"{'coverage':>9}  MC band"
    )
    for model, term, label in PLANTED:
        g = df[(df["model"] == model) & (df["term"] == term)]
        cov = float(g["covered"].mean())
        print(
            f"   {model:8} {term:34} {g['true'].iloc[0]:6.2f} {g['estimate'].mean():9.3f} "
            f"{100 * g['sign'].mean():9.0f}% {100 * cov:8.1f}%  {_band(0.95, len(g))}  {label}"
        )
    fallback = (df.drop_duplicates(["seed", "model"])["random"] != "slopes").sum()
    print(
        f"   fits that fell back from random slopes: {fallback}; {time.perf_counter() - t0:.0f} s"
    )


def null(seeds: int) -> None:
    t0 = time.perf_counter()
    df = _study(seeds, False)
    print(f"2. null simulation ({seeds} trials, every planted moderator zero): share with p < 0.05")
    for model, term, _ in PLANTED:
        g = df[(df["model"] == model) & (df["term"] == term)]
        print(
            f"   {model:8} {term:34} {100 * g['flag'].mean():5.1f}%  "
            f"(nominal 5%, MC band {_band(0.05, len(g))})"
        )
    anyflag = df.groupby("seed")["flag"].any().mean()
    print(
        f"   all {len(df)} tests: {100 * df['flag'].mean():.1f}% flagged; trials with any flag "
        f"among the 8: {100 * anyflag:.0f}% (expected 1 - 0.95^8 = 34% if independent); "
        f"{time.perf_counter() - t0:.0f} s"
    )


def _time(fn, repeats: int = 3) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def engine(seeds: int) -> None:
    import statsmodels
    import statsmodels.formula.api as smf

    print(
        f"3. engine vs statsmodels MixedLM .fit() defaults (statsmodels {statsmodels.__version__})"
    )
    formula = (
        "return_of_fear ~ session + success + augmented + augmented:success + window"
        " + augmented:window + exercise + tod_c"
    )
    rows = []
    for seed in range(seeds):
        trial = draw_session_trial(SessionTrialSpec(seed=20_000 + seed))
        _, t = model_frames(validate_sessions(trial.sessions))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            te, fit = _time(lambda t=t: fit_mixed(t, formula, "participant_id", "~session"))
            ts, ref = _time(
                lambda t=t: smf.mixedlm(
                    formula, t, groups=t["participant_id"], re_formula="~session"
                ).fit()
            )
        rows.append(
            {
                "sm_converged": bool(ref.converged),
                "dparam": float(np.max(np.abs(fit.params.to_numpy() - ref.fe_params.to_numpy()))),
                "dllf": float(fit.llf - ref.llf),
                "ratio": ts / te,
                "engine_s": te,
            }
        )
    r = pd.DataFrame(rows)
    conv = r[r["sm_converged"]]
    print(
        f"   between-session model, {seeds} trials: engine converged in all; statsmodels "
        f"defaults converged in {int(r['sm_converged'].sum())}"
    )
    if len(conv):
        print(
            f"   where both converged: max |fixed-effect difference| {conv['dparam'].max():.2e}, "
            f"log-likelihood engine - statsmodels in "
            f"[{conv['dllf'].min():.2e}, {conv['dllf'].max():.2e}]"
        )
    print(
        f"   speed: statsmodels time / engine time, median {r['ratio'].median():.2f}x "
        f"(engine median {1000 * r['engine_s'].median():.0f} ms per fit)"
    )
    path = Path(statsmodels.__file__).parent / "regression" / "tests" / "results" / "dietox.csv"
    if not path.is_file():
        print(f"   dietox: skipped, {path} absent")
        return
    data = pd.read_csv(path)
    for re_formula, lme4 in (
        (None, {"Intercept": 15.723523, "Time": 6.942505, "scale": 11.36692, "llf": -2404.775}),
        ("~Time", {"Intercept": 15.73865, "Time": 6.93901, "scale": 6.038, "llf": -2217.047}),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            te, fit = _time(lambda r=re_formula: fit_mixed(data, "Weight ~ Time", "Pig", r))
            ts, ref = _time(
                lambda r=re_formula: smf.mixedlm(
                    "Weight ~ Time", data, groups=data["Pig"], re_formula=r
                ).fit()
            )
        print(
            f"   dietox Weight ~ Time, random "
            f"{'intercepts' if re_formula is None else 'intercepts + slopes'}: "
            f"engine {fit.params['Intercept']:.6f} {fit.params['Time']:.6f} scale {fit.scale:.5f} "
            f"llf {fit.llf:.3f} ({fit.optimiser}); lme4 {lme4['Intercept']} {lme4['Time']} "
            f"scale {lme4['scale']} llf {lme4['llf']}; statsmodels defaults converged="
            f"{ref.converged} llf {ref.llf:.3f}; time ratio {ts / te:.2f}x"
        )


DESIGNS = [
    ("nmda", "before"),
    ("nmda", "before"),
    ("nmda", "before"),
    ("brain_stimulation", "during"),
    ("brain_stimulation", "during"),
    ("exercise", "before"),
    ("exercise", "before"),
    ("pharmacological", "after"),
    ("pharmacological", "after"),
]


def bridge(reps: int) -> None:
    """Two-stage (study effects -> REML meta-analysis) vs one-stage IPD, repeated."""
    from brainmatch.evidence.meta import rma
    from brainmatch.sessions import one_stage_ipd, study_effects

    t0 = time.perf_counter()
    rows = []
    for rep in range(reps):
        tables, labels, truths = [], [], []
        for k, (kind, timing) in enumerate(DESIGNS):
            spec = SessionTrialSpec(
                seed=30_000 + 100 * rep + k, augmentation_type=kind, timing=timing
            )
            trial = draw_session_trial(spec)
            tables.append(trial.sessions)
            labels.append(f"{kind}-{k}")
            truths.append(trial.truth_params["final_outcome"]["smd"])
        eff = study_effects(tables, labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = one_stage_ipd(tables, labels)
        two = rma(eff["g"].to_numpy(), eff["se"].to_numpy() ** 2, method="REML")
        true = float(np.mean(truths))
        rows.append(
            {
                "two": two.estimate,
                "one": one["estimate"],
                "inside": one["ci_lb"] <= two.estimate <= one["ci_ub"],
                "cov_two": float(two.ci_lb[0]) <= true <= float(two.ci_ub[0]),
                "cov_one": one["ci_lb"] <= true <= one["ci_ub"],
                "true": true,
            }
        )
    r = pd.DataFrame(rows)
    print(
        f"4. bridge: {reps} replications of 9 simulated trials (the docs' designs): "
        f"two-stage pooled g inside the one-stage IPD CI in {100 * r['inside'].mean():.0f}%; "
        f"|two - one| median {np.median(np.abs(r['two'] - r['one'])):.4f}, max "
        f"{np.max(np.abs(r['two'] - r['one'])):.4f}; mean true SMD {r['true'].mean():.3f}, "
        f"mean two-stage {r['two'].mean():.3f}, one-stage {r['one'].mean():.3f}; coverage of "
        f"the mean true SMD: two-stage {100 * r['cov_two'].mean():.0f}%, one-stage "
        f"{100 * r['cov_one'].mean():.0f}%; {time.perf_counter() - t0:.0f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--engine-seeds", type=int, default=20)
    ap.add_argument("--bridge-reps", type=int, default=40)
    ap.add_argument(
        "--parts", default="recovery,null,engine,bridge", help="comma-separated parts to run"
    )
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    print("timings measured on a shared, loaded 2-core machine")
    if "recovery" in parts:
        recovery(args.seeds)
    if "null" in parts:
        null(args.seeds)
    if "engine" in parts:
        engine(args.engine_seeds)
    if "bridge" in parts:
        bridge(args.bridge_reps)


if __name__ == "__main__":
    main()
