"""The typed result of validating a treatment-selection model (``validate`` / ``train``)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from brainmatch._io import write_json, write_tsv

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.tsv"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


@dataclass
class ValidationResult:
    """Cross-validated performance of a treatment-selection model.

    Attributes
    ----------
    metrics : dict
        Everything ``metrics.json`` holds: per-arm metrics, selection metrics (policy gain
        and its interval, permutation p-values, recommended counts), conformal calibration,
        learning curve, warnings, options.
    predictions : DataFrame
        Out-of-fold predictions under every arm, the recommended arm and its advantage
        (``predictions.tsv``).
    extras : dict
        In-memory only (not saved): arrays needed to fit and report the final model.
    """

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    extras: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``metrics.json`` (a JSON-safe copy)."""
        out: dict[str, Any] = json.loads(json.dumps(self.metrics, allow_nan=False))
        return out

    @property
    def selection_supported(self) -> bool:
        """Whether validation supports selecting by this model (p < 0.05 and gain CI > 0)."""
        return bool(self.metrics["selection"].get("selection_supported"))

    def save(self, out_dir: str | Path) -> Path:
        """Write ``metrics.json`` and ``predictions.tsv`` into ``out_dir`` (atomically).

        The folder is claimed like every command's output folder
        (:func:`brainmatch._outdir.claim_output`): new, empty or an earlier validation's;
        a folder holding a user's files or another command's outputs is refused
        (:class:`~brainmatch.errors.BrainmatchInputError`), never overwritten.
        """
        from brainmatch._outdir import claim_output

        with claim_output(out_dir, "validate", option="out_dir") as claim:
            self.write(claim.path)
        return Path(out_dir)

    def write(self, out: Path) -> None:
        """Write the two files into a folder the caller already holds (``train``'s)."""
        write_tsv(out / PREDICTIONS_FILE, self.predictions, float_format="%.6g")
        write_json(out / METRICS_FILE, self.metrics)

    def _repr_html_(self) -> str:
        m = self.metrics
        s = m["selection"]
        key = "auc" if m["binary"] else "r2"
        rows = [
            ("patients", f"{m['n']} ({', '.join(f'{a}: {c}' for a, c in m['n_per_arm'].items())})"),
            ("model", str(m.get("model_chosen") or m["model"])),
            ("validation", m["cv"]["description"]),
            (
                f"per-arm {key.upper()}",
                ", ".join(f"{a}: {_fmt(r[key])}" for a, r in m["per_arm"].items()),
            ),
            ("policy gain", f"{_fmt(s['policy_gain'])} (95% CI {_fmt(s['policy_gain_ci'])})"),
            ("policy gain d", f"{_fmt(s['policy_gain_d'])} (95% CI {_fmt(s['policy_gain_d_ci'])})"),
            ("permutation p", _fmt(s.get("permutation_p"))),
            ("selection supported", "yes" if s.get("selection_supported") else "no"),
            ("recommended", ", ".join(f"{a}: {c}" for a, c in s["recommended_counts"].items())),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        warns = "".join(f"<li>{html.escape(w)}</li>" for w in m.get("warnings", []))
        return (
            "<div><strong>brainmatch treatment-selection validation</strong>"
            f"<table>{body}</table>"
            + (
                f"<details><summary>{len(m['warnings'])} warning(s)</summary><ul>{warns}</ul>"
                "</details>"
                if warns
                else ""
            )
            + "</div>"
        )
