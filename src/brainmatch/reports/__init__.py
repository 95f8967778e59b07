"""HTML reports: one template environment, one stylesheet, one number formatter.

Every report is one self-contained file: figures are embedded (PNG or SVG as ``data:``
URIs), the stylesheet is inlined by ``templates/base.html``.

- :func:`render` fills a template of ``reports/templates`` (which extend ``base.html``).
- :func:`figure_to_data_uri` turns a matplotlib figure into an ``<img src=...>`` value;
  :func:`file_to_data_uri` does the same for an SVG / PNG file already written.
- :func:`fmt_num`, :func:`fmt_p` and :func:`p_text` format numbers the same way in every
  report (``p < 0.001``, never ``0`` or 16 digits); templates use them as the filters
  ``num``, ``pval`` and ``ptext``. :func:`fmt_value` formats any value a result's
  ``to_dict()`` holds (numbers, booleans, lists, dicts) and :func:`readable_text` tidies
  sentences that embed raw Python values; filters ``fmt`` and ``readable``.
- JSON cleaning is :func:`brainmatch._io.json_safe` (re-exported here): the one helper.
- :func:`write_report` writes ``report.html`` of any result after its ``.save(dir)``:
  the analyses never import report code; each topic's writer lives here (``evidence``,
  ``cbma``, ``change``, ``sessions``, ``normative``, ``durability``, ``selection``, ``qc``
  for the extraction reportlets, ``trial``) and the CLI calls them.
"""

from __future__ import annotations

import ast
import base64
import io
import math
import re
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from matplotlib.figure import Figure

from brainmatch import __version__
from brainmatch._io import json_safe as json_safe

_MIME = {".svg": "image/svg+xml", ".png": "image/png"}


def _as_float(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; scientific when very large or small; ``n/a``.

    Parameters
    ----------
    x : number or None
    digits : int

    Returns
    -------
    str
    """
    f = _as_float(x)
    if f is None:
        return "n/a"
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f != 0 and (abs(f) >= 10**6 or abs(f) < 10 ** (-digits)):
        return f"{f:.{max(digits - 1, 1)}e}"
    return f"{f:.{digits}f}"


def fmt_p(p: Any) -> str:
    """A p-value for a table cell: ``< 0.001`` below 0.001, else three decimals."""
    f = _as_float(p)
    if f is None:
        return "n/a"
    if f < 0.001:
        return "< 0.001"
    return f"{min(f, 1.0):.3f}"


def p_text(p: Any) -> str:
    """A p-value in a sentence: ``p < 0.001`` or ``p = 0.032``."""
    cell = fmt_p(p)
    return f"p {cell}" if cell.startswith("<") else f"p = {cell}"


def fmt_value(x: Any, digits: int = 3) -> str:
    """Any value of a result dictionary as report text.

    Numbers go through :func:`fmt_num`, booleans read ``yes`` / ``no``, lists and tuples
    ``[a, b]`` and dictionaries ``key: value, key: value`` (never a raw Python ``repr``).

    Parameters
    ----------
    x : Any
    digits : int

    Returns
    -------
    str
    """
    if x is None:
        return "n/a"
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        return fmt_num(float(x), digits)
    if isinstance(x, dict):
        return ", ".join(f"{k}: {fmt_value(v, digits)}" for k, v in x.items())
    if isinstance(x, list | tuple):
        return "[" + ", ".join(fmt_value(v, digits) for v in x) + "]"
    return str(x)


_DICT_RE = re.compile(r"\{[^{}]*\}")
_LIST_RE = re.compile(r"[\[(][^\[\]()]*[\])]")
_P_EQ_RE = re.compile(r"\bp\s*=\s*(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?![\w.])")
_LONG_FLOAT_RE = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?:e[+-]?\d+)?(?![\w.])")
_SCI_FLOAT_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?e[+-]?\d+(?![\w.])")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def readable_text(text: Any, digits: int = 3) -> str:
    """A sentence with any embedded Python ``repr`` made readable.

    ``{'a': 10, 'b': 12}`` becomes ``a: 10, b: 12``, ``(0.1234567, 0.9)`` becomes
    ``[0.123, 0.900]``, ``p=0.0`` becomes ``p < 0.001`` (:func:`p_text`) and a float
    with 16 digits is shortened by :func:`fmt_num`.

    Parameters
    ----------
    text : Any
    digits : int

    Returns
    -------
    str
    """
    if not isinstance(text, str):
        return fmt_value(text, digits)

    def _dict(m: re.Match[str]) -> str:
        value = _literal(m.group(0))
        return fmt_value(value, digits) if isinstance(value, dict) else m.group(0)

    def _seq(m: re.Match[str]) -> str:
        value = _literal(m.group(0))
        if (
            isinstance(value, list | tuple)
            and value
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            return fmt_value(list(value), digits)
        return m.group(0)

    out = _DICT_RE.sub(_dict, text)
    out = _LIST_RE.sub(_seq, out)
    out = _P_EQ_RE.sub(lambda m: p_text(float(m.group(1))), out)
    out = _LONG_FLOAT_RE.sub(lambda m: fmt_num(float(m.group(0)), digits), out)
    return _SCI_FLOAT_RE.sub(lambda m: fmt_num(float(m.group(0)), digits), out)


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("brainmatch", "reports/templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(num=fmt_num, pval=fmt_p, ptext=p_text, fmt=fmt_value, readable=readable_text)


def environment() -> jinja2.Environment:
    """The one Jinja environment of brainmatch's reports."""
    return _ENV


def render(template: str, **context: Any) -> str:
    """Render ``reports/templates/<template>`` with ``context`` (plus ``version``)."""
    return _ENV.get_template(template).render(version=__version__, **context)


def figure_to_data_uri(fig: Figure, dpi: int = 110) -> str:
    """Encode a matplotlib figure as a ``data:image/png;base64,...`` URI and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_to_data_uri(path: str | Path) -> str:
    """Encode an SVG or PNG file as a ``data:`` URI (so a report needs no other file)."""
    path = Path(path)
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_report(result: Any, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` of any brainmatch result, after ``result.save(out_dir)``.

    The analyses never render reports (their ``.save`` writes the data: tables,
    ``results.json``, figures); this is the one Python entry point to the writer of each
    result type in this package (the CLI calls the same writers).

    Parameters
    ----------
    result : result object
        ``MetaAnalysis``, ``NetworkMetaAnalysis``, ``CBMAResult``, ``CBMAComparison``,
        ``ChangeResult``, ``SessionsResult``, ``NormativeFitResult``,
        ``NormativeScoreResult``, ``PatientProfile``, ``DurabilityResult``,
        ``DurabilityTrainResult``, ``DurabilityRecommendation``, ``TrainResult`` or
        ``RecommendResult``.
    out_dir : str or Path, optional
        The folder the result was saved to (default: the result's own ``out_dir`` for
        those that carry one: ``TrainResult``, ``RecommendResult``,
        ``DurabilityTrainResult``).

    Returns
    -------
    Path
        The report.
    """
    kind = type(result).__name__
    own = getattr(result, "out_dir", None)
    target = Path(out_dir) if out_dir is not None else (Path(own) if own is not None else None)
    if kind in ("TrainResult", "RecommendResult"):
        from brainmatch.reports import selection

        if target is not None and own is not None and target != Path(own):
            raise ValueError(f"a {kind} reports into its own out_dir ({own}), not {target}")
        if kind == "TrainResult":
            return selection.write_train_report(result)
        return selection.write_recommend_report(result)
    if target is None:
        raise TypeError(f"write_report({kind}): give out_dir, the folder the result was saved to")
    if kind == "MetaAnalysis":
        from brainmatch.reports.evidence import write_meta_report

        return write_meta_report(result, target)
    if kind == "NetworkMetaAnalysis":
        from brainmatch.reports.evidence import write_nma_report

        return write_nma_report(result, target)
    if kind == "CBMAResult":
        from brainmatch.reports import cbma

        return cbma.write_report(result, target)
    if kind == "CBMAComparison":
        from brainmatch.reports import cbma

        return cbma.write_comparison_report(result.results, target)
    if kind == "ChangeResult":
        from brainmatch.reports import change

        return change.write_report(result, target)
    if kind == "SessionsResult":
        from brainmatch.reports import sessions

        return sessions.write_report(result, target)
    if kind in ("NormativeFitResult", "NormativeScoreResult", "PatientProfile"):
        from brainmatch.reports import normative

        if kind == "NormativeFitResult":
            return normative.write_fit_report(result, target / "report.html")
        if kind == "NormativeScoreResult":
            return normative.write_score_report(result, target / "report.html")
        return normative.write_profile_report(result, target / "report.html")
    if kind in ("DurabilityResult", "DurabilityTrainResult", "DurabilityRecommendation"):
        from brainmatch.reports import durability

        if kind == "DurabilityRecommendation":
            return durability.write_recommend_report(result, target)
        if kind == "DurabilityTrainResult":
            result.report_path = durability.write_report(result.validation, target)
            return Path(result.report_path)
        return durability.write_report(result, target)
    raise TypeError(f"write_report: no report for a {kind}")
