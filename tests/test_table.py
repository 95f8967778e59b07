"""The one table reader reads numbers back exactly as a float64 writer printed them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmatch._table import read_any_table


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.csv.gz", "t.tsv.gz"])
def test_written_floats_read_back_bit_exactly(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 20)), columns=[f"f{i}" for i in range(20)])
    sep = "\t" if ".tsv" in name else ","
    df.to_csv(tmp_path / name, sep=sep, index=False)
    back = read_any_table(tmp_path / name)
    # pandas' default parser misses about a third of these by one unit in the last place
    fast = pd.read_csv(tmp_path / name, sep=sep)
    assert (fast.to_numpy() != df.to_numpy()).any()
    np.testing.assert_array_equal(back.to_numpy(), df.to_numpy())


def test_semicolon_csv_with_decimal_commas_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(200, 5)), columns=list("abcde"))
    df.to_csv(tmp_path / "t.csv", sep=";", decimal=",", index=False)
    back = read_any_table(tmp_path / "t.csv")
    np.testing.assert_array_equal(back.to_numpy(), df.to_numpy())
