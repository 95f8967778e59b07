"""Types of the C kernel ``_regionsum.c`` (see its comments)."""

from collections.abc import Callable
from typing import Any

def region_sums(
    volume: Any, code: str, voxels: Any, columns: Any, v_lo: int, v_hi: int, out: Any
) -> None: ...
def run_sums(
    volume: Any, starts: Any, lengths: Any, columns: Any, r_lo: int, r_hi: int, out: Any
) -> None: ...
def volume_run_sums(
    readinto: Callable[[memoryview], int | None],
    views: list[memoryview],
    volume: Any,
    starts: Any,
    lengths: Any,
    columns: Any,
    bounds: Any,
    out: Any,
) -> tuple[int, int]: ...
