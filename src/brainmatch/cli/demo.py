"""``brainmatch demo``: the whole pipeline on a simulated trial, ending in a report.

simulate -> extract -> train (nested CV, permutation test) -> recommend for a held-out
new patient -> an index report (the trial summary) linking each stage's own report.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from brainmatch._outdir import LOCK, MANIFEST, read_manifest, recorded_files, write_manifest
from brainmatch.cli._common import (
    N_JOBS_DEFAULT,
    console,
    echo_kv,
    hold_output_folder,
    out,
    progress_bar,
    resolve_n_jobs,
    user_errors,
)
from brainmatch.errors import BrainmatchInputError

if TYPE_CHECKING:
    import pandas as pd

    from brainmatch.simulate import TrialSpec

_MARKER = ".brainmatch-demo"

#: The demo's a-priori features, named by the treatment-selection literature rather than
#: found in the data: resting activity (amplitude) of the left and right insula (McGrath et
#: al. 2013) and connectivity of the subcallosal / rostral anterior cingulate with left
#: ventrolateral prefrontal cortex (pars opercularis, pars triangularis), left insula and
#: left ventromedial prefrontal cortex (medial orbitofrontal) (Dunlop et al. 2017), in
#: Desikan-Killiany names.  With ~6500 whole-brain features and 120 patients, ridge
#: models find nothing (the sample-size warnings say why); hypothesis-driven features
#: are the honest way to test a published marker in a trial this size.
APRIORI_PATTERNS = (
    re.compile(r"^amp__ctx_[lr]h_insula$"),
    re.compile(
        r"^conn__(?=.*rostralanteriorcingulate)(?=.*ctx_lh_(insula|parsopercularis|"
        r"parstriangularis|medialorbitofrontal)).*$"
    ),
    # cingulum FA (Korgaonkar 2014) and amygdala reactivity to faces (Fu 2008)
    re.compile(r"^dti__fa__wm_Cingulum_[LR]$"),
    re.compile(r"^task__faces__faces_shapes__(Left|Right)_Amygdala$"),
)


def apriori_features(columns: list[str]) -> list[str]:
    """The feature columns matching :data:`APRIORI_PATTERNS`."""
    chosen = [c for c in columns if any(p.match(c) for p in APRIORI_PATTERNS)]
    if not chosen:
        raise BrainmatchInputError(
            "no a-priori feature (insula amplitude, subcallosal-cingulate "
            "connectivity) in the extracted table"
        )
    return chosen


def prepare_demo_dir(path: Path) -> None:
    """Create ``path``; clear it when an earlier demo made it; refuse someone else's files."""
    if path.exists() and not path.is_dir():
        raise BrainmatchInputError("exists and is not a folder", path)
    entries = [p for p in path.iterdir() if p.name not in (MANIFEST, LOCK)] if path.is_dir() else []
    if entries:
        if not (path / _MARKER).exists():
            raise BrainmatchInputError(
                "folder is not empty and is not an earlier brainmatch demo; choose another --out",
                path,
            )
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    (path / _MARKER).write_text("brainmatch demo output; `brainmatch demo` may replace it\n")


@user_errors
def demo(
    out_dir: Path = typer.Option(
        Path("brainmatch-demo"),
        "--out",
        "-o",
        help="Folder for everything the demo writes (replaced on rerun).",
    ),
    n_subjects: int = typer.Option(120, "--n-subjects", help="Patients in the simulated trial."),
    seed: int = typer.Option(2026, "--seed", help="Random seed of the simulated trial."),
    n_jobs: int = typer.Option(
        N_JOBS_DEFAULT, "--n-jobs", "--nprocs", help="Processes to use (0 = all cores)."
    ),
    n_permutations: int = typer.Option(
        1000, "--n-permutations", help="Permutations of the selection-benefit test."
    ),
    n_controls: int = typer.Option(
        80, "--n-controls", help="Healthy controls for the normative model (0: skip that stage)."
    ),
) -> None:
    """Run the whole pipeline on a simulated trial and print where the report is.

    Simulates a trial (CBT vs SSRI, three sites, a strong treatment-by-biomarker effect)
    plus one new patient held out of everything, extracts brain features (Desikan-Killiany
    regions), trains and validates a treatment-selection model on the a-priori features the
    literature names (insula activity, subcallosal-cingulate connectivity), recommends a
    treatment for the new patient from their scan, and writes an index report linking every
    stage's report.
    """
    if (out_dir / _MARKER).is_file() and read_manifest(out_dir) is None:
        # a demo folder written before output manifests existed: all of it is the demo's
        write_manifest(out_dir, "demo", recorded_files(out_dir), running=False)
    hold_output_folder(out_dir, "demo", overwrite=True)
    report = run_demo(
        out_dir,
        n_subjects=n_subjects,
        seed=seed,
        n_jobs=resolve_n_jobs(n_jobs),
        n_permutations=n_permutations,
        n_controls=n_controls,
    )
    out.print(f"Report: {report}", highlight=False, soft_wrap=True)


def run_demo(
    out_dir: Path,
    *,
    n_subjects: int = 120,
    seed: int = 2026,
    n_jobs: int = 0,
    n_permutations: int = 1000,
    n_controls: int = 80,
) -> Path:
    """Run every pipeline stage on a simulated trial; return the index report's path."""
    import pandas as pd

    from brainmatch.features import extract_dataset
    from brainmatch.reports.qc import write_reportlets
    from brainmatch.reports.selection import write_recommend_report, write_train_report
    from brainmatch.reports.trial import write_trial_report
    from brainmatch.selection import recommend, train
    from brainmatch.selection.data import table_metadata
    from brainmatch.simulate import TrialSpec, simulate_trial
    from brainmatch.simulate.model import EFFECT_SIZES

    start = time.perf_counter()
    out_dir = out_dir.absolute()
    prepare_demo_dir(out_dir)
    jobs = n_jobs if n_jobs > 0 else (os.cpu_count() or 1)
    # one more patient than requested: the last one is the "new patient", never trained on
    spec = TrialSpec(
        n_subjects=n_subjects + 1,
        n_sites=3,
        arms=("CBT", "SSRI"),
        resolution=4,
        n_volumes=80,
        tr=2.0,
        seed=seed,
        effect_size=EFFECT_SIZES["strong"],
        dwi=True,
        task_fmri=True,
        cortex=True,
    )  # every modality
    bids = out_dir / "bids"
    stages: list[dict[str, str]] = []
    total = 5 if n_controls > 0 else 4

    console.print(
        f"[bold]1/{total}[/] simulating {n_subjects} patients + 1 new patient "
        "(CBT vs SSRI, 3 sites)"
    )
    with progress_bar("simulating subjects") as update:
        simulate_trial(spec, bids, n_jobs=jobs, progress=update)
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    new_patient = str(participants["participant_id"].iloc[-1])
    stages.append(
        {
            "name": "simulate",
            "link": "bids/ground_truth.tsv",
            "summary": f"{n_subjects} trial patients and one new patient ({new_patient}) "
            "as BIDS + fMRIPrep derivatives",
        }
    )

    console.print(f"[bold]2/{total}[/] extracting brain features (Desikan-Killiany regions)")
    features_dir = out_dir / "derivatives" / "brainmatch"
    # every modality into one table: resting state, task (faces - shapes), DTI, FreeSurfer
    from brainmatch.features.config import DwiOptions, TaskOptions

    with progress_bar("extracting subjects") as update:
        extracted = extract_dataset(
            bids,
            features_dir,
            derivatives=bids / "derivatives" / "fmriprep",
            freesurfer=bids / "derivatives" / "freesurfer",
            atlas="desikan-killiany",
            denoise="simple",
            connectivity=("correlation",),
            n_jobs=jobs,
            progress=update,
            modalities=("func", "dwi", "anat"),
            dwi_options=DwiOptions(derivatives=bids / "derivatives" / "qsiprep"),
            task_options=TaskOptions(contrasts=("faces-shapes",), qc_figures=False),
        )
    write_reportlets(features_dir)
    if extracted.features_path is None:
        raise BrainmatchInputError(
            f"feature extraction failed for every subject; see {extracted.failures_path}"
        )
    features = pd.read_parquet(extracted.features_path)
    n_features = features.shape[1] - 1
    stages.append(
        {
            "name": "extract",
            "link": "derivatives/brainmatch/features.tsv",
            "summary": f"{len(features)} subjects x {n_features} features "
            f"({len(extracted.failures)} failures)",
        }
    )

    console.print(f"[bold]3/{total}[/] training and validating the treatment-selection model")
    outcomes = pd.read_csv(bids / "phenotype" / "outcomes.tsv", sep="\t", na_values="n/a")
    table = participants.merge(outcomes, on="participant_id")
    trial_ids = table["participant_id"] != new_patient
    chosen = apriori_features(list(features.columns))
    subset = features[["participant_id", *chosen]].copy()
    # keep the extraction provenance, so that the model can re-extract a new patient's scan
    subset.attrs = table_metadata(extracted.features_path)
    # the new patient is absent from the outcomes table and therefore never trained on
    with progress_bar("cross-validating") as update:
        result = train(
            subset,
            table[trial_ids],
            treatment_column="arm",
            outcome_column="hamd_week8",
            baseline_column="hamd_baseline",
            site_column="site",
            covariates=("age", "sex"),
            out_dir=out_dir / "model",
            n_permutations=n_permutations,
            seed=seed,
            progress=update,
        )
    write_train_report(result)
    sel = result.metrics["selection"]
    stages.append(
        {
            "name": "train",
            "link": "model/report.html",
            "summary": (
                f"{len(chosen)} a-priori features (McGrath 2013 insula activity, "
                f"Dunlop 2017 subcallosal-cingulate connectivity); policy gain "
                f"{sel['policy_gain']:+.2f} HAMD points "
                f"[{sel['policy_gain_ci'][0]:+.2f}, {sel['policy_gain_ci'][1]:+.2f}]"
                f", standardised {sel['policy_gain_d']:+.2f}, permutation "
                f"p = {sel['permutation_p']:.3g}; selection "
                f"{'supported' if sel['selection_supported'] else 'NOT supported'}"
                " by validation"
            ),
        }
    )

    console.print(f"[bold]4/{total}[/] recommending a treatment for the new patient {new_patient}")
    clinical = table.loc[~trial_ids, ["participant_id", "age", "sex", "site", "hamd_baseline"]]
    assert result.model_path is not None  # the default (linear) model is always stored
    rec = recommend(
        result.model_path, bids, out_dir / "recommend", clinical=clinical, participant=[new_patient]
    )
    write_recommend_report(rec)
    patient = rec.patients[0]
    truth = pd.read_csv(bids / "ground_truth.tsv", sep="\t").set_index("participant_id")
    oracle = truth.loc[new_patient, "oracle_arm"]
    stages.append(
        {
            "name": "recommend",
            "link": "recommend/report.html",
            "summary": f"{new_patient}: {patient['statement']} "
            f"(the simulator's truth: {oracle} is best for this patient)",
        }
    )

    if n_controls > 0:
        stages.append(
            normative_stage(
                out_dir, spec, jobs, new_patient, table, features, result.model_path, n_controls
            )
        )

    report = write_trial_report(bids, out_dir / "report.html", stages=stages)
    echo_kv(
        "brainmatch demo",
        {
            "dataset": str(bids),
            "features": str(extracted.features_path),
            "model": str(result.model_path),
            "recommendation": str(out_dir / "recommend" / "recommend.json"),
            "time": f"{time.perf_counter() - start:.0f} s",
        },
    )
    return report


def normative_stage(
    out_dir: Path,
    spec: TrialSpec,
    jobs: int,
    new_patient: str,
    table: pd.DataFrame,
    features: pd.DataFrame,
    selection_model: Path,
    n_controls: int,
) -> dict[str, str]:
    """Healthy controls scanned at the trial's sites -> normative model -> the new patient's
    profile (circuits against the norm, hypotheses, and the trained model's prediction)."""
    import dataclasses

    import pandas as pd

    from brainmatch.features import extract_dataset
    from brainmatch.normative import fit_normative
    from brainmatch.normative.profile import build_profile
    from brainmatch.reports.normative import write_fit_report, write_profile_report
    from brainmatch.reports.qc import write_reportlets
    from brainmatch.simulate import simulate_trial

    console.print(
        f"[bold]5/5[/] normative model on {n_controls} healthy controls and the new patient's "
        "profile"
    )
    # the same seed and sites (same scanner effects) as the trial; a simulated trial needs
    # patients (one per site here), only its controls are used
    # (the norm is fitted on the controls' resting-state features: no DWI / task / cortex)
    cspec = dataclasses.replace(
        spec,
        n_subjects=spec.n_sites,
        n_controls=n_controls,
        dwi=False,
        task_fmri=False,
        cortex=False,
    )
    cbids = out_dir / "controls" / "bids"
    with progress_bar("simulating controls") as update:
        simulate_trial(cspec, cbids, n_jobs=jobs, progress=update)
    cpart = pd.read_csv(cbids / "participants.tsv", sep="\t")
    controls = cpart.loc[cpart["group"] == "control", "participant_id"].tolist()
    with progress_bar("extracting controls") as update:
        cext = extract_dataset(
            cbids,
            out_dir / "controls" / "features",
            derivatives=cbids / "derivatives" / "fmriprep",
            freesurfer=cbids / "derivatives" / "freesurfer",
            atlas="desikan-killiany",
            denoise="simple",
            connectivity=("correlation",),
            n_jobs=jobs,
            participant_label=[c.removeprefix("sub-") for c in controls],
            progress=update,
        )
    write_reportlets(out_dir / "controls" / "features")
    if cext.features_path is None:
        raise BrainmatchInputError(
            f"feature extraction failed for every control; see {cext.failures_path}"
        )
    # from the file, so that the model records how the features were extracted (features.json)
    # and `brainmatch profile` can extract a new patient's scan the same way
    fit = fit_normative(
        cext.features_path,
        cpart[["participant_id", "age", "sex", "site"]],
        covariate_columns=("age", "sex"),
        site_column="site",
        out_dir=out_dir / "normative",
    )
    write_fit_report(fit, out_dir / "normative" / "report.html")
    patient = features[features["participant_id"] == new_patient].merge(
        table[["participant_id", "age", "sex", "site", "hamd_baseline"]], on="participant_id"
    )
    profile = build_profile(
        out_dir / "normative" / "normative_model.npz",
        patient,
        participant=new_patient,
        selection_model=selection_model,
        out_dir=out_dir / "profile",
    )
    write_profile_report(profile, out_dir / "profile" / "report.html")
    cal = fit.summary["calibration"]
    called = profile.circuits[profile.circuits["call"] != ""]
    share = (
        f"{100 * cal['share_abs_z_below_1_96']:.1f}% of held-out controls' |z| < 1.96"
        if cal
        else "no hold-out"
    )
    return {
        "name": "profile",
        "link": "profile/report.html",
        "summary": f"normative model on {fit.summary['n_controls']} healthy controls ({share}); "
        f"{new_patient}: {len(called)} deviant circuit measure(s), "
        f"{len(profile.hypotheses)} circuit-treatment hypotheses",
    }


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI."""
    app.command("demo")(demo)
