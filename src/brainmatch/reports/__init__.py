"""HTML reports: one template environment, one stylesheet, one number formatter.

Every report is one self-contained file: figures are embedded (PNG or SVG as ``data:``
URIs), the stylesheet is inlined by ``templates/base.html``.

- :func:`render` fills a template of ``reports/templates`` (which extend ``base.html``).
- :func:`figure_to_data_uri` turns a matplotlib figure into an ``<img src=...>`` value;
  :func:`file_to_data_uri` does the same for an SVG / PNG file already written.
- :func:`fmt_num`, :func:`fmt_p` and :func:`p_text` format numbers the same way in every
  report (``p < 0.001``, never ``0`` or 16 digits); templates use them as the filters
  ``num``, ``pval`` and ``ptext``.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.figure import Figure

from brainmatch import __version__

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


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("brainmatch", "reports/templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(num=fmt_num, pval=fmt_p, ptext=p_text)


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
