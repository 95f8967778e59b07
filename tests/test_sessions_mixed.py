"""The mixed-model engine: statsmodels MixedLM (checked against lme4), with optimiser fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.sessions import SessionTrialSpec, draw_session_trial, fit_mixed
from brainmatch.sessions.analysis import model_frames
from brainmatch.sessions.schema import validate_sessions


def _dietox() -> pd.DataFrame:
    import statsmodels

    path = Path(statsmodels.__file__).parent / "regression" / "tests" / "results" / "dietox.csv"
    if not path.is_file():
        pytest.skip(f"statsmodels' copy of the dietox data (geepack) is absent: {path}")
    return pd.read_csv(path)


def test_dietox_reproduces_lme4() -> None:
    """lme4: lmer(Weight ~ Time + (1 | Pig), dietox) (REML), as published in SCIENCE.md."""
    fit = fit_mixed(_dietox(), "Weight ~ Time", "Pig")
    assert fit.converged
    assert fit.params["Intercept"] == pytest.approx(15.723523, abs=2e-6)
    assert fit.params["Time"] == pytest.approx(6.942505, abs=2e-6)
    assert fit.scale == pytest.approx(11.36692, abs=1e-4)  # 11.366899 here
    assert float(fit.cov_re.iloc[0, 0]) == pytest.approx(40.39395, abs=2e-3)  # 40.394744 here
    assert fit.llf == pytest.approx(-2404.775, abs=1e-3)


def test_dietox_random_slopes_where_default_mixedlm_fails() -> None:
    """lmer(Weight ~ Time + (Time | Pig), dietox): 15.73865, 6.93901, residual variance
    6.038, REML log-likelihood -2217.047 (lme4's output as quoted in statsmodels' "Comparing
    R lmer to statsmodels MixedLM" documentation; not rerun in R here).  statsmodels'
    default ``fit()`` stops unconverged on this model; the engine's optimiser chain does not.
    """
    import warnings

    import statsmodels.formula.api as smf

    data = _dietox()
    fit = fit_mixed(data, "Weight ~ Time", "Pig", "~Time")
    assert fit.converged and fit.random == "slopes"
    assert fit.params["Intercept"] == pytest.approx(15.73865, abs=1e-5)
    assert fit.params["Time"] == pytest.approx(6.93901, abs=1e-5)
    assert fit.scale == pytest.approx(6.038, abs=2e-3)
    assert fit.llf == pytest.approx(-2217.047, abs=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = smf.mixedlm("Weight ~ Time", data, groups=data["Pig"], re_formula="~Time").fit()
        same = smf.mixedlm("Weight ~ Time", data, groups=data["Pig"], re_formula="~Time").fit(
            method=[fit.optimiser]
        )
    assert not default.converged
    assert fit.llf >= default.llf
    np.testing.assert_allclose(fit.params.to_numpy(), same.fe_params.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(fit.bse.to_numpy(), same.bse_fe.to_numpy(), rtol=1e-10)


@pytest.mark.parametrize("method", ["lbfgs", "bfgs", "powell", "cg"])
def test_engine_equals_mixedlm_on_the_between_session_formula(method: str) -> None:
    """Same formula, random intercepts and slopes, on a simulated trial: same optimum."""
    import statsmodels.formula.api as smf

    trial = draw_session_trial(SessionTrialSpec(n_per_arm=40, seed=3))
    df = validate_sessions(trial.sessions)
    _, t = model_frames(df)
    formula = (
        "return_of_fear ~ session + success + augmented + augmented:success + window"
        " + augmented:window + exercise + tod_c"
    )
    fit = fit_mixed(t, formula, "participant_id", "~session")
    ref = smf.mixedlm(formula, t, groups=t["participant_id"], re_formula="~session").fit(
        method=[method], maxiter=5000
    )
    assert fit.converged
    assert fit.llf >= ref.llf - 1e-6  # the engine's optimum is at least as good
    if ref.converged and abs(ref.llf - fit.llf) < 1e-4:
        np.testing.assert_allclose(fit.params.to_numpy(), ref.fe_params.to_numpy(), atol=1e-3)
        np.testing.assert_allclose(fit.bse.to_numpy(), ref.bse_fe.to_numpy(), rtol=1e-2)


def test_falls_back_when_an_optimiser_fails() -> None:
    data = _dietox()
    fit = fit_mixed(data, "Weight ~ Time", "Pig", optimisers=("no-such-optimiser", "lbfgs"))
    assert fit.optimiser == "lbfgs"
    assert fit.params["Time"] == pytest.approx(6.942505, abs=2e-6)
    assert any("no-such-optimiser" in n for n in fit.notes)


def test_too_few_groups() -> None:
    data = _dietox()
    data = data[data["Pig"].isin(data["Pig"].unique()[:2])]
    with pytest.raises(BrainmatchInputError, match="at least 3 participants"):
        fit_mixed(data, "Weight ~ Time", "Pig")


def test_contrast_equals_the_coefficient_and_its_se() -> None:
    fit = fit_mixed(_dietox(), "Weight ~ Time", "Pig")
    c = fit.contrast({"Time": 1.0})
    assert c["estimate"] == fit.params["Time"]
    assert c["se"] == pytest.approx(fit.bse["Time"])
    tab = fit.table()
    assert tab.loc[tab["term"] == "Time", "ci_lb"].item() == pytest.approx(c["ci_lb"])


def test_falls_back_to_simpler_random_effects_and_says_so() -> None:
    """No random effects at all in the data: Nelder-Mead alone cannot fit the slopes."""
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"g": np.repeat(np.arange(40), 3), "x": np.tile([0, 1, 2], 40)})
    d["y"] = 1 + 0.5 * d["x"] + rng.normal(size=len(d))
    fit = fit_mixed(d, "y ~ x", "g", "~x", optimisers=("nm",))
    assert fit.random == "intercept"
    assert any("reported the random-intercept model" in n for n in fit.notes)
    full = fit_mixed(d, "y ~ x", "g", "~x")
    assert full.random == "slopes" and full.converged
    assert any("bfgs: did not converge" in n for n in full.notes)
    # the random-intercept fallback is MixedLM's random-intercept model
    ref = fit_mixed(d, "y ~ x", "g")
    assert fit.params["x"] == pytest.approx(ref.params["x"], abs=1e-4)


def test_a_degenerate_boundary_fit_is_never_reported() -> None:
    """Between-trial variance at zero: L-BFGS returns a singular fit with log-likelihood
    +inf on these data; the engine must report the finite optimum, which then equals OLS."""
    import statsmodels.formula.api as smf

    from brainmatch.sessions.effects import final_scores

    designs = [("nmda", "before")] * 3 + [("brain_stimulation", "during")] * 2
    designs += [("exercise", "before")] * 2 + [("pharmacological", "after")] * 2
    parts = []
    for k, (kind, timing) in enumerate(designs):
        spec = SessionTrialSpec(seed=30_000 + k, augmentation_type=kind, timing=timing)
        fin = final_scores(validate_sessions(draw_session_trial(spec).sessions))
        v = fin.groupby("active")["y"].agg(["var", "count"])
        sp = np.sqrt(((v["count"] - 1) * v["var"]).sum() / (v["count"].sum() - 2))
        parts.append(fin.assign(z=fin["y"] / sp, trial=f"t{k}"))
    d = pd.concat(parts, ignore_index=True)
    fit = fit_mixed(d, "z ~ 0 + C(trial) + active", "trial", "~0 + active")
    assert np.isfinite(fit.llf)
    ols = smf.ols("z ~ 0 + C(trial) + active", d).fit()
    assert float(fit.cov_re.iloc[0, 0]) < 1e-6
    assert fit.params["active"] == pytest.approx(ols.params["active"], abs=1e-4)
