"""Merge the tables printed by ``bench_select.py`` runs and apply the issue's target.

``python benchmarks/summarize_select.py CHEAP.log [EXPENSIVE.log]`` reads the markdown rows
of the logs (e.g. the full grid with the cheap methods, and the non-linear rows with
``auto`` and EconML), prints one table with, per row, whether the default recovers at
least the best anchor's share minus that anchor's Monte-Carlo error (and the same for the
plain ridge, the default before screening, against the other anchors, and for the screen
chosen by the outcome's error, ``screen.CRITERION = "mse"``, the previous default, when its
column is in the logs), the counts per interaction type, and the rows where the default
and the plain ridge differ by more than 0.05.

Logs from runs that print per-seed shares (``per-seed shares of <row>: {...}``) also give
the default's difference from the best anchor paired seed by seed, with the Monte-Carlo
error of that difference: a stricter reading of the target than the anchor's own error.
"""

from __future__ import annotations

import json
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


SEEDS: dict[str, dict[str, list[float]]] = {}
"""regime -> method -> share per seed (seeds 0, 1, ...), from the logs that print them."""


def parse(path: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Rows of every markdown table in a log: regime -> {method: cell}, in order (and the
    per-seed shares into :data:`SEEDS`)."""
    rows: dict[str, dict[str, str]] = {}
    order: list[str] = []
    header: list[str] = []
    for line in open(path):
        if line.startswith("per-seed shares of "):
            regime, _, payload = line[len("per-seed shares of ") :].partition(": ")
            SEEDS.setdefault(regime.strip(), {}).update(json.loads(payload))
            continue
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


def paired(regime: str, anchor: str) -> tuple[float, float, int] | None:
    """The default minus ``anchor``, seed by seed: (mean, its Monte-Carlo SE, seeds), over
    the seeds both ran (None without per-seed shares of both, or with fewer than 2)."""
    d = SEEDS.get(regime, {})
    a, b = d.get(DEFAULT), d.get(anchor)
    if not a or not b:
        return None
    k = min(len(a), len(b))
    if k < 2:
        return None
    diff = np.array(a[:k]) - np.array(b[:k])
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(k)), k


def main() -> None:
    rows, order = parse(sys.argv[1])
    for path in sys.argv[2:]:
        for k, v in parse(path)[0].items():
            if k not in rows:  # a row only a later log has
                order.append(k)
            # a later log's "not run" never replaces an earlier log's number
            rows.setdefault(k, {}).update(
                {m: c for m, c in v.items() if value(c) or m not in rows[k]}
            )
    print(
        "| regime | "
        + " | ".join(c[1] for c in COLUMNS)
        + " | anchors compared | default >= best anchor - MC error | >= 0.9 where the best"
        " anchor >= 0.8 | plain ridge >= best other anchor - MC error | default - best anchor,"
        " paired by seed (MC SE of the difference; seeds) |"
    )
    print("|---|" + "---|" * (len(COLUMNS) + 5))
    paired_n = 0
    paired_ok = 0
    kinds: Counter[str] = Counter()
    new_ok: Counter[str] = Counter()
    old_ok: Counter[str] = Counter()
    old_n: Counter[str] = Counter()
    prev_ok: Counter[str] = Counter()
    high_n: Counter[str] = Counter()
    high_ok: Counter[str] = Counter()
    by_anchors: Counter[int] = Counter()
    prev_shares: list[float] = []
    pairs = []
    untestable = []
    for regime in order:
        d = rows[regime]
        cells = [re.sub(r" \[.*?\]", "", d.get(h, "")) for h, _ in COLUMNS]
        v = {h: value(d.get(h)) for h, _ in COLUMNS}
        dv, rv = v[DEFAULT], v[RIDGE]
        anchors = {h: x for h, x in v.items() if h.startswith("anchor") and x is not None}
        lead = f"| {regime} | " + " | ".join(cells) + f" | {len(anchors)} |"
        if dv is None:
            print(lead + " (the default did not run) | | | |")
            continue
        if np.isnan(dv[0]):
            print(lead + " (null: share undefined) | | | |")
            continue
        if not anchors:
            print(lead + " (no anchor ran) | | | |")
            continue
        best_name = max(anchors, key=lambda h: anchors[h][0])
        best = anchors[best_name]
        if np.isnan(best[1]):  # one seed: no Monte-Carlo error to compare within
            untestable.append(regime)
            print(lead + " n/a (one seed) | | | |")
            continue
        t_new = dv[0] >= best[0] - best[1] - 1e-9
        kind = regime.split()[2]
        kinds[kind] += 1
        new_ok[kind] += t_new
        by_anchors[len(anchors)] += 1
        high = ""
        if best[0] >= 0.8:
            high_n[kind] += 1
            high_ok[kind] += dv[0] >= 0.9 - 1e-9
            high = "yes" if dv[0] >= 0.9 - 1e-9 else "**no**"
        others = [x for h, x in anchors.items() if h != RIDGE]
        old = ""
        if rv is not None and others:
            other = max(others, key=lambda x: x[0])
            t_old = rv[0] >= other[0] - other[1] - 1e-9
            old_n[kind] += 1
            old_ok[kind] += t_old
            old = "yes" if t_old else "no"
        pv = v[PREVIOUS]
        if pv is not None:
            prev_ok[kind] += pv[0] >= best[0] - best[1] - 1e-9
            prev_shares.append(pv[0])
        if rv is not None:
            pairs.append((regime, dv[0], rv[0]))
        pair = paired(regime, best_name)
        pair_cell = ""
        if pair is not None:
            paired_n += 1
            ok = pair[0] >= -pair[1] - 1e-9
            paired_ok += ok
            pair_cell = f"{pair[0]:+.2f} ({pair[1]:.2f}; {pair[2]})" + ("" if ok else " **below**")
        print(lead + f" {'yes' if t_new else '**no**'} | {high} | {old} | {pair_cell} |")
    print()
    for kind in kinds:
        print(
            f"{kind}: default {new_ok[kind]} of {kinds[kind]}"
            + (
                f" (>= 0.9 in {high_ok[kind]} of the {high_n[kind]} rows where the best anchor"
                " reaches 0.8)"
                if high_n[kind]
                else ""
            )
            + (f", plain ridge {old_ok[kind]} of {old_n[kind]}" if old_n[kind] else "")
            + (f", outcome-error screen (previous default) {prev_ok[kind]}" if prev_shares else "")
        )
    n_rows = sum(kinds.values())
    print(
        f"all: default {sum(new_ok.values())} of {n_rows}; second target (>= 0.9 where the "
        f"best anchor >= 0.8) {sum(high_ok.values())} of {sum(high_n.values())}; rows by "
        "number of anchors compared: "
        + ", ".join(f"{k}: {by_anchors[k]}" for k in sorted(by_anchors))
    )
    if paired_n:
        print(
            f"paired by seed (default - best anchor >= -its MC error): {paired_ok} of "
            f"{paired_n} rows with per-seed shares of both"
        )
    if untestable:
        print(f"not tested (one seed, no Monte-Carlo error): {len(untestable)} rows")
    if pairs:
        a = np.array([x[1] for x in pairs])
        b = np.array([x[2] for x in pairs])
        print(
            f"plain ridge {sum(old_ok.values())} of {sum(old_n.values())}; mean share "
            f"default {a.mean():.3f}, plain ridge {b.mean():.3f}; default better by > 0.05 in "
            f"{(a - b > 0.05).sum()} rows, worse by > 0.05 in {(b - a > 0.05).sum()}"
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
