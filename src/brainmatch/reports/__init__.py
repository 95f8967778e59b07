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
