"""HTML reports: Jinja2 templates with figures embedded as base64 PNG.

:func:`render` fills a template of ``reports/templates``; :func:`figure_to_data_uri` turns a
matplotlib figure into an ``<img src=...>`` value, so a report is one self-contained file.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import jinja2
from matplotlib.figure import Figure

from brainmatch import __version__

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("brainmatch", "reports/templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


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
