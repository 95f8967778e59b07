"""Merge the tables printed by ``bench_select.py`` runs and apply the issue's target.

``python benchmarks/summarize_select.py CHEAP.log [EXPENSIVE.log]`` reads the markdown rows
of the logs (e.g. the full grid with the cheap methods, and the non-linear rows with
``auto`` and EconML), prints one table with, per row, whether the default recovers at
least the best anchor's share minus that anchor's Monte-Carlo error (and the same for the
plain ridge, the default before screening, against the other anchors, and for the screen
chosen by the outcome's error, ``screen.CRITERION = "mse"``, the previous default, when its
column is in the logs), the counts per interaction type, and the rows where the default
and the plain ridge differ by more than 0.05.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

import numpy as np

DEFAULT = "bm default (interaction, select auto)"
PREVIOUS = "bm screen by outcome error (previous default)"
RIDGE = "anchor ridge interaction (all features)"
COLUMNS = [
    (DEFAULT, "default"),
    (PREVIOUS, "screen chosen by the outcome error (previous default)"),
    (RIDGE, "ridge, all features (anchor; old default)"),
    ("anchor lasso T", "lasso T (anchor)"),
    ("bm auto", "`auto`"),
    ("anchor EconML DR", "EconML DR (anchor)"),
    ("anchor EconML CF", "EconML CF (anchor)"),
]


def parse(path: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Rows of every markdown table in a log: regime -> {method: cell}, in order."""
    rows: dict[str, dict[str, str]] = {}
    order: list[str] = []
    header: list[str] = []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| regime"):
            header = cells
        elif line.startswith("| n="):
            if cells[0] not in rows:
                order.append(cells[0])
            rows.setdefault(cells[0], {}).update(dict(zip(header[1:], cells[1:], strict=False)))
    return rows, order


def value(cell: str | None) -> tuple[float, float] | None:
    """(mean, Monte-Carlo SE) of a cell, None when the method did not run."""
    m = re.match(r"(-?[\d.]+|nan) \+- (-?[\d.]+|nan)", cell or "")
    return (float(m.group(1)), float(m.group(2))) if m else None


def main() -> None:
    rows, order = parse(sys.argv[1])
    for path in sys.argv[2:]:
        for k, v in parse(path)[0].items():
            rows.setdefault(k, {}).update(v)
    print(
        "| regime | "
        + " | ".join(c[1] for c in COLUMNS)
        + " | default >= best anchor - MC error | plain ridge >= best other anchor - MC error |"
    )
    print("|---|" + "---|" * (len(COLUMNS) + 2))
    kinds: Counter[str] = Counter()
    new_ok: Counter[str] = Counter()
    old_ok: Counter[str] = Counter()
    prev_ok: Counter[str] = Counter()
    prev_shares: list[float] = []
    pairs = []
    for regime in order:
        d = rows[regime]
        cells = [re.sub(r" \[.*?\]", "", d.get(h, "")) for h, _ in COLUMNS]
        v = {h: value(d.get(h)) for h, _ in COLUMNS}
        dv, rv = v[DEFAULT], v[RIDGE]
        if dv is None or rv is None or np.isnan(dv[0]):
            print(f"| {regime} | " + " | ".join(cells) + " | (null: share undefined) | |")
            continue
        anchors = {h: x for h, x in v.items() if h.startswith("anchor") and x is not None}
        best = max(anchors.values(), key=lambda x: x[0])
        others = max((x for h, x in anchors.items() if h != RIDGE), key=lambda x: x[0])
        t_new = dv[0] >= best[0] - best[1] - 1e-9
        t_old = rv[0] >= others[0] - others[1] - 1e-9
        kind = regime.split()[2]
        kinds[kind] += 1
        new_ok[kind] += t_new
        old_ok[kind] += t_old
        pv = v[PREVIOUS]
        if pv is not None:
            prev_ok[kind] += pv[0] >= best[0] - best[1] - 1e-9
            prev_shares.append(pv[0])
        pairs.append((regime, dv[0], rv[0]))
        print(
            f"| {regime} | "
            + " | ".join(cells)
            + f" | {'yes' if t_new else '**no**'} | {'yes' if t_old else 'no'} |"
        )
    print()
    for kind in kinds:
        print(
            f"{kind}: default {new_ok[kind]} of {kinds[kind]}, "
            f"plain ridge {old_ok[kind]} of {kinds[kind]}"
            + (f", outcome-error screen (previous default) {prev_ok[kind]}" if prev_shares else "")
        )
    a = np.array([x[1] for x in pairs])
    b = np.array([x[2] for x in pairs])
    print(
        f"all: default {sum(new_ok.values())} of {len(pairs)}, plain ridge "
        f"{sum(old_ok.values())} of {len(pairs)}; mean share default {a.mean():.3f}, "
        f"plain ridge {b.mean():.3f}; default better by > 0.05 in {(a - b > 0.05).sum()} "
        f"rows, worse by > 0.05 in {(b - a > 0.05).sum()}"
    )
    if len(prev_shares) == len(pairs):
        c = np.array(prev_shares)
        print(
            f"outcome-error screen (previous default): {sum(prev_ok.values())} of "
            f"{len(pairs)}; mean share {c.mean():.3f}; default better by > 0.05 in "
            f"{(a - c > 0.05).sum()} rows, worse by > 0.05 in {(c - a > 0.05).sum()}"
        )
    for regime, x, y in pairs:
        if abs(x - y) > 0.05:
            print(f"  {regime}: default {x:.2f}, plain ridge {y:.2f}")


if __name__ == "__main__":
    main()
