"""Quality control of ``brainmatch extract``: per-run measures, a reportlet per unit, ``qc.tsv``.

What an fMRIPrep / XCP-D user looks at, per run: framewise displacement (fMRIPrep's
``framewise_displacement`` column) and the censored volumes, region coverage (share of a
region's voxels with a changing signal, :mod:`~brainmatch.features.modalities.func`), the
temporal SNR of the region means (mean / SD over the kept volumes of the raw region
signal; the median over regions), and a carpet plot of the cleaned region series.  The
measures and the figure go into the unit's record; ``qc.tsv`` (+ ``qc.json``) holds one
row per participant(-session).  The reportlet, one self-contained HTML file per
participant(-session), is rendered from the records by :mod:`brainmatch.reports.qc` on
the report base (this package never imports report code).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np


def run_measures(
    raw: np.ndarray,
    sample_mask: np.ndarray | None,
    n_volumes: int,
    fd: np.ndarray | None,
    coverage: dict[str, float],
    fd_threshold: float | None,
) -> dict[str, Any]:
    """QC numbers of one resting-state run (JSON-able)."""
    kept = raw if sample_mask is None else raw[sample_mask]
    with np.errstate(divide="ignore", invalid="ignore"):
        tsnr = kept.mean(axis=0) / kept.std(axis=0, ddof=1)
    cov = np.array(list(coverage.values()), dtype=float)
    out: dict[str, Any] = {
        "n_volumes": int(n_volumes),
        "n_censored": int(n_volumes - len(kept)),
        "tsnr_median": float(np.nanmedian(tsnr)) if tsnr.size else float("nan"),
        "coverage_mean": float(cov.mean()) if cov.size else float("nan"),
        "coverage_min": float(cov.min()) if cov.size else float("nan"),
        "fd_threshold": fd_threshold,
    }
    if fd is not None and len(fd) == n_volumes:
        out["mean_fd"] = float(np.nanmean(fd))
        out["max_fd"] = float(np.nanmax(fd))
    else:
        out["mean_fd"] = out["max_fd"] = float("nan")
    return out


def read_fd(confounds: Path) -> np.ndarray | None:
    """fMRIPrep's ``framewise_displacement`` column (first value n/a), or None."""
    try:
        import pandas as pd

        table = pd.read_csv(
            confounds, sep="\t", na_values=["n/a"], usecols=["framewise_displacement"]
        )
    except (OSError, ValueError, KeyError):
        return None
    return table["framewise_displacement"].to_numpy(dtype=float)


def _png_gray(pixels: np.ndarray) -> bytes:
    """A minimal 8-bit greyscale PNG of a 2D uint8 array."""
    import struct
    import zlib

    h, w = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(pixels))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def run_figure(
    name: str,
    cleaned: np.ndarray,
    fd: np.ndarray | None,
    sample_mask: np.ndarray | None,
    coverage: dict[str, float],
    n_volumes: int,
    fd_threshold: float | None,
) -> str:
    """FD with censored volumes, carpet plot, coverage: one inline SVG (drawn directly)."""
    import base64

    width, left, right = 760.0, 50.0, 10.0
    plot_w = width - left - right
    t_x = plot_w / max(n_volumes, 1)
    censored = np.zeros(n_volumes, dtype=bool)
    if sample_mask is not None:
        censored[:] = True
        censored[np.asarray(sample_mask)] = False
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='420' "
        f"viewBox='0 0 {width:.0f} 420' font-family='sans-serif' font-size='11'>",
        f"<text x='{left}' y='12'>{html.escape(name)}: framewise displacement "
        f"({int(censored.sum())} censored volumes shaded)</text>",
    ]
    # FD panel: y 20-100
    y0, h = 20.0, 80.0
    for v in np.flatnonzero(censored):
        out.append(
            f"<rect x='{left + v * t_x:.1f}' y='{y0}' width='{t_x:.2f}' height='{h}' "
            "fill='#f4a3a3'/>"
        )
    if fd is not None and len(fd) == n_volumes and np.isfinite(fd).any():
        top = max(float(np.nanmax(fd)), fd_threshold or 0.0, 1e-6)
        pts = " ".join(
            f"{left + (i + 0.5) * t_x:.1f},{y0 + h - h * float(v) / top:.1f}"
            for i, v in enumerate(fd)
            if np.isfinite(v)
        )
        out.append(f"<polyline points='{pts}' fill='none' stroke='#333' stroke-width='1'/>")
        if fd_threshold:
            y = y0 + h - h * fd_threshold / top
            out.append(
                f"<line x1='{left}' x2='{left + plot_w}' y1='{y:.1f}' y2='{y:.1f}' "
                "stroke='#c33' stroke-dasharray='4 3'/>"
            )
        out.append(f"<text x='4' y='{y0 + 10}'>{top:.2g} mm</text>")
    out.append(f"<text x='4' y='{y0 + h}'>0</text>")
    # carpet: y 125-305 (regions x kept volumes, z clipped to +-2)
    out.append(
        f"<text x='{left}' y='120'>carpet plot: cleaned region signals (z, kept volumes)</text>"
    )
    if cleaned.size:
        pixels = np.clip((np.nan_to_num(cleaned.T) + 2.0) / 4.0 * 255.0, 0, 255).astype(np.uint8)
        data = base64.b64encode(_png_gray(pixels)).decode()
        out.append(
            f"<image x='{left}' y='125' width='{plot_w}' height='180' preserveAspectRatio='none' "
            f"style='image-rendering:pixelated' href='data:image/png;base64,{data}'/>"
        )
    # coverage: y 330-410
    cov = np.array(list(coverage.values()), dtype=float)
    out.append(f"<text x='{left}' y='325'>region coverage (red: below 0.5)</text>")
    if cov.size:
        r_x = plot_w / cov.size
        for i, c in enumerate(cov):
            hh = 80.0 * float(np.clip(c, 0, 1))
            colour = "#c33" if c < 0.5 else "#4a7"
            bar = max(r_x - 0.5, 0.5)
            out.append(
                f"<rect x='{left + i * r_x:.1f}' y='{410 - hh:.1f}' width='{bar:.2f}' "
                f"height='{hh:.1f}' fill='{colour}'/>"
            )
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["read_fd", "run_figure", "run_measures"]
