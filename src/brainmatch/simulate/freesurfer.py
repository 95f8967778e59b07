"""Subcortical volumes of simulated subjects, written as FreeSurfer's ``aseg.stats``.

Means and spreads of the 16 ENIGMA subcortical measures (lateral ventricles, thalamus,
caudate, putamen, pallidum, hippocampus, amygdala, accumbens) and of intracranial volume
come from the 20 real individuals shipped with the ENIGMA Toolbox
(``brainmatch/data/enigma/example_SubVol.csv``); the remaining aseg structures take
typical adult FreeSurfer values (assumed, not fitted).  Volumes scale with intracranial
volume (power 0.7), carry the site's volume bias, and the hippocampi carry the
``hippocampal_volume`` biomarker plus the ENIGMA-MDD patient effect (d = -0.14, Schmaal et
al. 2016).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from brainmatch._io import write_text

#: FreeSurfer 7 aseg.stats rows: (SegId, StructName).
ASEG_ROWS: tuple[tuple[int, str], ...] = (
    (4, "Left-Lateral-Ventricle"),
    (5, "Left-Inf-Lat-Vent"),
    (7, "Left-Cerebellum-White-Matter"),
    (8, "Left-Cerebellum-Cortex"),
    (10, "Left-Thalamus"),
    (11, "Left-Caudate"),
    (12, "Left-Putamen"),
    (13, "Left-Pallidum"),
    (14, "3rd-Ventricle"),
    (15, "4th-Ventricle"),
    (16, "Brain-Stem"),
    (17, "Left-Hippocampus"),
    (18, "Left-Amygdala"),
    (24, "CSF"),
    (26, "Left-Accumbens-area"),
    (28, "Left-VentralDC"),
    (30, "Left-vessel"),
    (31, "Left-choroid-plexus"),
    (43, "Right-Lateral-Ventricle"),
    (44, "Right-Inf-Lat-Vent"),
    (46, "Right-Cerebellum-White-Matter"),
    (47, "Right-Cerebellum-Cortex"),
    (49, "Right-Thalamus"),
    (50, "Right-Caudate"),
    (51, "Right-Putamen"),
    (52, "Right-Pallidum"),
    (53, "Right-Hippocampus"),
    (54, "Right-Amygdala"),
    (58, "Right-Accumbens-area"),
    (60, "Right-VentralDC"),
    (62, "Right-vessel"),
    (63, "Right-choroid-plexus"),
    (72, "5th-Ventricle"),
    (77, "WM-hypointensities"),
    (78, "Left-WM-hypointensities"),
    (79, "Right-WM-hypointensities"),
    (80, "non-WM-hypointensities"),
    (81, "Left-non-WM-hypointensities"),
    (82, "Right-non-WM-hypointensities"),
    (85, "Optic-Chiasm"),
    (251, "CC_Posterior"),
    (252, "CC_Mid_Posterior"),
    (253, "CC_Central"),
    (254, "CC_Mid_Anterior"),
    (255, "CC_Anterior"),
)

_ENIGMA_COLUMNS = {
    "LLatVent": "Left-Lateral-Ventricle",
    "RLatVent": "Right-Lateral-Ventricle",
    "Lthal": "Left-Thalamus",
    "Rthal": "Right-Thalamus",
    "Lcaud": "Left-Caudate",
    "Rcaud": "Right-Caudate",
    "Lput": "Left-Putamen",
    "Rput": "Right-Putamen",
    "Lpal": "Left-Pallidum",
    "Rpal": "Right-Pallidum",
    "Lhippo": "Left-Hippocampus",
    "Rhippo": "Right-Hippocampus",
    "Lamyg": "Left-Amygdala",
    "Ramyg": "Right-Amygdala",
    "Laccumb": "Left-Accumbens-area",
    "Raccumb": "Right-Accumbens-area",
}

#: Typical adult volumes (mm^3) and relative SDs for the structures ENIGMA does not list
#: (assumed values of the simulator, in the range FreeSurfer reports for adults).
_TYPICAL: dict[str, tuple[float, float]] = {
    "Inf-Lat-Vent": (400.0, 0.4),
    "Cerebellum-White-Matter": (14500.0, 0.12),
    "Cerebellum-Cortex": (52000.0, 0.1),
    "3rd-Ventricle": (1000.0, 0.35),
    "4th-Ventricle": (1700.0, 0.3),
    "Brain-Stem": (21000.0, 0.1),
    "CSF": (1000.0, 0.25),
    "VentralDC": (4000.0, 0.1),
    "vessel": (50.0, 0.4),
    "choroid-plexus": (600.0, 0.3),
    "5th-Ventricle": (0.0, 0.0),
    "WM-hypointensities": (1200.0, 0.6),
    "Left-WM-hypointensities": (0.0, 0.0),
    "Right-WM-hypointensities": (0.0, 0.0),
    "non-WM-hypointensities": (0.0, 0.0),
    "Left-non-WM-hypointensities": (0.0, 0.0),
    "Right-non-WM-hypointensities": (0.0, 0.0),
    "Optic-Chiasm": (200.0, 0.3),
    "CC_Posterior": (950.0, 0.15),
    "CC_Mid_Posterior": (450.0, 0.18),
    "CC_Central": (450.0, 0.18),
    "CC_Mid_Anterior": (450.0, 0.18),
    "CC_Anterior": (850.0, 0.15),
}

MDD_HIPPOCAMPUS_D = -0.14


@functools.lru_cache(maxsize=1)
def enigma_reference() -> tuple[dict[str, tuple[float, float]], float, float]:
    """Per-structure (mean, relative SD), ICV mean and SD from the ENIGMA example individuals."""
    folder = resources.files("brainmatch").joinpath("data/enigma")
    vols = pd.read_csv(str(folder.joinpath("example_SubVol.csv")))
    ref = {}
    for col, name in _ENIGMA_COLUMNS.items():
        v = vols[col].astype(float)
        ref[name] = (float(v.mean()), float(v.std(ddof=1) / v.mean()))
    icv = vols["ICV"].astype(float)
    return ref, float(icv.mean()), float(icv.std(ddof=1))


def _reference(name: str) -> tuple[float, float]:
    ref, _, _ = enigma_reference()
    if name in ref:
        return ref[name]
    key = name.removeprefix("Left-").removeprefix("Right-")
    return _TYPICAL.get(name, _TYPICAL.get(key, (0.0, 0.0)))


def draw_volumes(
    rng: np.random.Generator, sex: str, hippocampal_z: float, site_scale: float
) -> tuple[dict[str, float], float]:
    """Draw one subject's aseg volumes (mm^3) and estimated total intracranial volume."""
    _, icv_mean, icv_sd = enigma_reference()
    icv = icv_mean * (1.05 if sex == "M" else 0.95) + rng.normal(0.0, 0.8 * icv_sd)
    icv = float(np.clip(icv, 0.6 * icv_mean, 1.5 * icv_mean))
    size = (icv / icv_mean) ** 0.7
    vols = {}
    for _, name in ASEG_ROWS:
        mean, rel_sd = _reference(name)
        if "Hippocampus" in name:
            z = hippocampal_z + MDD_HIPPOCAMPUS_D + rng.normal(0.0, 0.35)
        else:
            z = rng.normal()
        vols[name] = max(0.0, mean * size * (1.0 + rel_sd * z) * site_scale)
    return vols, icv * site_scale


def aseg_stats_text(subject: str, vols: dict[str, float], etiv: float) -> str:
    """Render volumes in the layout of FreeSurfer 7's ``stats/aseg.stats``."""
    sub = sum(
        vols[n]
        for n in vols
        if any(
            k in n
            for k in (
                "Thalamus",
                "Caudate",
                "Putamen",
                "Pallidum",
                "Hippocampus",
                "Amygdala",
                "Accumbens",
                "VentralDC",
            )
        )
    )
    vent = sum(vols[n] for n in vols if "Ventricle" in n or "Vent" in n or "choroid" in n)
    cortex_l, cortex_r = 0.155 * etiv, 0.156 * etiv
    wm_l, wm_r = 0.147 * etiv, 0.148 * etiv
    cereb = sum(vols[n] for n in vols if "Cerebellum" in n)
    brainseg = cortex_l + cortex_r + wm_l + wm_r + sub + cereb + vols["Brain-Stem"] + vent
    measures = [
        ("BrainSeg", "BrainSegVol", "Brain Segmentation Volume", brainseg, "mm^3"),
        (
            "BrainSegNotVent",
            "BrainSegVolNotVent",
            "Brain Segmentation Volume Without Ventricles",
            brainseg - vent,
            "mm^3",
        ),
        (
            "VentricleChoroidVol",
            "VentricleChoroidVol",
            "Volume of ventricles and choroid plexus",
            vent,
            "mm^3",
        ),
        (
            "lhCortex",
            "lhCortexVol",
            "Left hemisphere cortical gray matter volume",
            cortex_l,
            "mm^3",
        ),
        (
            "rhCortex",
            "rhCortexVol",
            "Right hemisphere cortical gray matter volume",
            cortex_r,
            "mm^3",
        ),
        ("Cortex", "CortexVol", "Total cortical gray matter volume", cortex_l + cortex_r, "mm^3"),
        (
            "lhCerebralWhiteMatter",
            "lhCerebralWhiteMatterVol",
            "Left hemisphere cerebral white matter volume",
            wm_l,
            "mm^3",
        ),
        (
            "rhCerebralWhiteMatter",
            "rhCerebralWhiteMatterVol",
            "Right hemisphere cerebral white matter volume",
            wm_r,
            "mm^3",
        ),
        (
            "CerebralWhiteMatter",
            "CerebralWhiteMatterVol",
            "Total cerebral white matter volume",
            wm_l + wm_r,
            "mm^3",
        ),
        ("SubCortGray", "SubCortGrayVol", "Subcortical gray matter volume", sub, "mm^3"),
        (
            "TotalGray",
            "TotalGrayVol",
            "Total gray matter volume",
            cortex_l + cortex_r + sub + cereb * 0.78,
            "mm^3",
        ),
        (
            "SupraTentorial",
            "SupraTentorialVol",
            "Supratentorial volume",
            brainseg - cereb - vols["Brain-Stem"],
            "mm^3",
        ),
        (
            "SupraTentorialNotVent",
            "SupraTentorialVolNotVent",
            "Supratentorial volume",
            brainseg - cereb - vols["Brain-Stem"] - vent,
            "mm^3",
        ),
        ("Mask", "MaskVol", "Mask Volume", 1.1 * brainseg, "mm^3"),
        (
            "BrainSegVol-to-eTIV",
            "BrainSegVol-to-eTIV",
            "Ratio of BrainSegVol to eTIV",
            brainseg / etiv,
            "unitless",
        ),
        (
            "MaskVol-to-eTIV",
            "MaskVol-to-eTIV",
            "Ratio of MaskVol to eTIV",
            1.1 * brainseg / etiv,
            "unitless",
        ),
        (
            "EstimatedTotalIntraCranialVol",
            "eTIV",
            "Estimated Total Intracranial Volume",
            etiv,
            "mm^3",
        ),
    ]
    lines = [
        "# Title Segmentation Statistics ",
        "# ",
        "# generating_program mri_segstats",
        "# cvs_version 7.4.1",
        f"# cmdline mri_segstats --seg mri/aseg.mgz --sum stats/aseg.stats --pv mri/norm.mgz "
        f"--empty --brainmask mri/brainmask.mgz --brain-vol-from-seg --excludeid 0 "
        f"--excl-ctxgmwm --supratent --subcortgray --in mri/norm.mgz --in-intensity-name norm "
        f"--in-intensity-units MR --etiv --surf-wm-vol --surf-ctx-vol --totalgray --euler "
        f"--ctab $FREESURFER_HOME/ASegStatsLUT.txt --subject {subject} ",
        "# sysname  Linux",
        "# hostname brainmatch-simulate",
        "# machine  x86_64",
        "# user     brainmatch",
        "# anatomy_type volume",
        "# ",
        "# SUBJECTS_DIR derivatives/freesurfer",
        f"# subjectname {subject}",
    ]
    for m in measures:
        lines.append(f"# Measure {m[0]}, {m[1]}, {m[2]}, {m[3]:.6f}, {m[4]}")
    lines += [
        "# SegVolFile mri/aseg.mgz ",
        "# ColorTable $FREESURFER_HOME/ASegStatsLUT.txt ",
        "# InVolFile  mri/norm.mgz ",
        "# InVolFrame 0 ",
        "# PVVolFile  mri/norm.mgz ",
        "# Excluding Cortical Gray and White Matter",
        "# ExcludeSegId 0 2 3 41 42 ",
        "# VoxelVolume_mm3 1 ",
    ]
    cols = [
        ("Index", "Index", "NA"),
        ("SegId", "Segmentation Id", "NA"),
        ("NVoxels", "Number of Voxels", "unitless"),
        ("Volume_mm3", "Volume", "mm^3"),
        ("StructName", "Structure Name", "NA"),
        ("normMean", "Intensity normMean", "MR"),
        ("normStdDev", "Itensity normStdDev", "MR"),
        ("normMin", "Intensity normMin", "MR"),
        ("normMax", "Intensity normMax", "MR"),
        ("normRange", "Intensity normRange", "MR"),
    ]
    for i, (head, field, unit) in enumerate(cols, start=1):
        lines += [
            f"# TableCol {i:2d} ColHeader {head} ",
            f"# TableCol {i:2d} FieldName {field} ",
            f"# TableCol {i:2d} Units     {unit} ",
        ]
    lines += [
        f"# NRows {len(ASEG_ROWS)} ",
        f"# NTableCols {len(cols)} ",
        "# ColHeaders  " + " ".join(c[0] for c in cols) + " ",
    ]
    for i, (seg, name) in enumerate(ASEG_ROWS, start=1):
        v = vols[name]
        nvox = round(v)
        lines.append(
            f"{i:3d} {seg:4d} {nvox:8d} {v:12.1f}  {name:<32s} "
            f"{75.0:8.4f} {8.0:8.4f} {40.0:8.4f} {110.0:8.4f} {70.0:8.4f} "
        )
    return "\n".join(lines) + "\n"


def write_aseg_stats(
    freesurfer_dir: Path, subject: str, vols: dict[str, float], etiv: float
) -> Path:
    """Write ``<freesurfer_dir>/<subject>/stats/aseg.stats`` atomically; return its path."""
    path = freesurfer_dir / subject / "stats" / "aseg.stats"
    write_text(path, aseg_stats_text(subject, vols, etiv))
    return path


#: Desikan-Killiany regions: typical adult mean thickness (mm) and white-surface area
#: (mm^2) of one hemisphere (assumed round values of the order FreeSurfer reports, not
#: fitted to data).
DK_TYPICAL: dict[str, tuple[float, float]] = {
    "bankssts": (2.6, 1000.0),
    "caudalanteriorcingulate": (2.6, 650.0),
    "caudalmiddlefrontal": (2.6, 2200.0),
    "cuneus": (1.9, 1500.0),
    "entorhinal": (3.3, 450.0),
    "fusiform": (2.8, 3200.0),
    "inferiorparietal": (2.5, 5500.0),
    "inferiortemporal": (2.8, 3500.0),
    "isthmuscingulate": (2.5, 950.0),
    "lateraloccipital": (2.2, 4700.0),
    "lateralorbitofrontal": (2.7, 2700.0),
    "lingual": (2.0, 3300.0),
    "medialorbitofrontal": (2.4, 1700.0),
    "middletemporal": (2.9, 3200.0),
    "parahippocampal": (2.7, 650.0),
    "paracentral": (2.4, 1300.0),
    "parsopercularis": (2.6, 1500.0),
    "parsorbitalis": (2.7, 700.0),
    "parstriangularis": (2.5, 1300.0),
    "pericalcarine": (1.6, 1500.0),
    "postcentral": (2.1, 4500.0),
    "posteriorcingulate": (2.5, 1100.0),
    "precentral": (2.6, 5000.0),
    "precuneus": (2.4, 4000.0),
    "rostralanteriorcingulate": (2.8, 650.0),
    "rostralmiddlefrontal": (2.4, 5800.0),
    "superiorfrontal": (2.8, 7500.0),
    "superiorparietal": (2.3, 5500.0),
    "superiortemporal": (2.8, 3600.0),
    "supramarginal": (2.6, 3800.0),
    "frontalpole": (2.8, 250.0),
    "temporalpole": (3.5, 450.0),
    "transversetemporal": (2.3, 400.0),
    "insula": (3.0, 2100.0),
}
#: Regions thinner in adult MDD (ENIGMA-MDD, Schmaal et al. 2017: d -0.10 to -0.14 in
#: orbitofrontal, anterior / posterior cingulate, insula and temporal cortex).
MDD_THICKNESS_D = -0.12
MDD_THINNER = (
    "medialorbitofrontal",
    "lateralorbitofrontal",
    "rostralanteriorcingulate",
    "caudalanteriorcingulate",
    "posteriorcingulate",
    "isthmuscingulate",
    "insula",
    "superiortemporal",
    "middletemporal",
    "inferiortemporal",
    "fusiform",
)
THICKNESS_REL_SD = 0.06
AREA_REL_SD = 0.12


def draw_cortex(
    rng: np.random.Generator, etiv: float, site_scale: float
) -> dict[str, dict[str, dict[str, float]]]:
    """One subject's aparc rows per hemisphere: region -> SurfArea, GrayVol, ThickAvg."""
    _, icv_mean, _ = enigma_reference()
    size = (etiv / site_scale / icv_mean) ** (2.0 / 3.0)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for hemi in ("lh", "rh"):
        rows = {}
        for region, (thick, area) in DK_TYPICAL.items():
            z = rng.normal()
            if region in MDD_THINNER:
                z += MDD_THICKNESS_D
            t = thick * (1.0 + THICKNESS_REL_SD * z) * site_scale ** (1 / 3)
            a = area * size * (1.0 + AREA_REL_SD * rng.normal()) * site_scale ** (2 / 3)
            rows[region] = {"SurfArea": max(a, 1.0), "ThickAvg": max(t, 0.5)}
            rows[region]["GrayVol"] = 1.1 * rows[region]["SurfArea"] * rows[region]["ThickAvg"]
        out[hemi] = rows
    return out


def aparc_stats_text(subject: str, hemi: str, rows: dict[str, dict[str, float]]) -> str:
    """Render one hemisphere in the layout of FreeSurfer 7's ``stats/?h.aparc.stats``."""
    area = sum(r["SurfArea"] for r in rows.values())
    mean_thick = sum(r["SurfArea"] * r["ThickAvg"] for r in rows.values()) / area
    lines = [
        "# Table of FreeSurfer cortical parcellation anatomical statistics ",
        "# ",
        "# CreationTime 2026/01/01-00:00:00-GMT",
        "# generating_program mris_anatomical_stats",
        "# cvs_version 7.4.1",
        f"# cmdline mris_anatomical_stats -th3 -mgz -cortex ../label/{hemi}.cortex.label -f "
        f"../stats/{hemi}.aparc.stats -b -a ../label/{hemi}.aparc.annot -c "
        f"../label/aparc.annot.ctab {subject} {hemi} white ",
        "# sysname  Linux",
        "# hostname brainmatch-simulate",
        f"# subjectname {subject}",
        f"# hemi {hemi}",
        f"# AnnotationFile ../label/{hemi}.aparc.annot",
        f"# Measure Cortex, NumVert, Number of Vertices, {round(area / 0.8)}, unitless",
        f"# Measure Cortex, WhiteSurfArea, White Surface Total Area, {area:.1f}, mm^2",
        f"# Measure Cortex, MeanThickness, Mean Thickness, {mean_thick:.5f}, mm",
        "# NTableCols 10",
        "# ColHeaders StructName NumVert SurfArea GrayVol ThickAvg ThickStd MeanCurv "
        "GausCurv FoldInd CurvInd",
    ]
    for region, r in rows.items():
        lines.append(
            f"{region:<40s} {round(r['SurfArea'] / 0.8):5d} {r['SurfArea']:6.0f} "
            f"{r['GrayVol']:6.0f} {r['ThickAvg']:5.3f} {0.6:5.3f} {0.12:7.3f} {0.03:7.3f} "
            f"{10:4d} {1.5:4.1f}"
        )
    return "\n".join(lines) + "\n"


def write_aparc_stats(
    freesurfer_dir: Path, subject: str, rng: np.random.Generator, etiv: float, site_scale: float
) -> tuple[Path, Path]:
    """Draw and write ``<subject>/stats/lh.aparc.stats`` and ``rh.aparc.stats``."""
    rows = draw_cortex(rng, etiv, site_scale)
    paths = []
    for hemi in ("lh", "rh"):
        path = freesurfer_dir / subject / "stats" / f"{hemi}.aparc.stats"
        write_text(path, aparc_stats_text(subject, hemi, rows[hemi]))
        paths.append(path)
    return paths[0], paths[1]
