"""controller.heap: freed heap handed back to the system (the operator's RSS after its
start burst at 500 clusters was mostly memory glibc kept)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

OPERATOR = Path(__file__).resolve().parents[2] / "operator"

# Fills the heap with 100 kB blocks (below glibc's mmap threshold), keeps one block
# allocated after them (so free() alone cannot shrink the heap's top), frees the rest,
# then trims: the RSS before the free, after it, and after the trim, in MB.
CHILD = """
import json
from guestha.controller import heap
blocks = [bytearray(100_000) for _ in range(2_000)]
keep = bytearray(100_000)
full = heap._rss_mb()
del blocks
freed = heap._rss_mb()
returned = heap.trim()
print(json.dumps([full, freed, heap._rss_mb(), returned]))
"""


def test_trim_returns_the_freed_heap_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, timeout=60, env={"PYTHONPATH": str(OPERATOR)})
    full, freed, trimmed, returned = json.loads(out.stdout)
    assert returned
    assert freed > full - 100  # freeing alone kept most of the 200 MB
    assert trimmed < freed - 150  # the trim gave it back
