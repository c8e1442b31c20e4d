"""The CLI starts without its heavy dependencies: a command imports numba, scipy, torch, ray or matplotlib only
when it runs, so `regionshards --help` and every `regionshards CMD --help` answer at once. (What is imported is
checked, not how long it takes: timings in unit tests are noise.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from regionshards.cli.main import main

HEAVY = ("numba", "scipy", "torch", "torchvision", "ray", "matplotlib", "skimage", "cv2", "pandas")
SRC = Path(__file__).resolve().parents[1] / "src"


def _imported(*args: str) -> set[str]:
    """Top-level packages imported by ``python -m regionshards ARGS`` (from ``-X importtime``)."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "regionshards", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage:" in proc.stdout
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("args", [("--help",), ("verify", "--help"), ("failures", "--help")],
                         ids=["help", "verify", "failures"])
def test_help_imports_no_heavy_module(args: tuple[str, ...]) -> None:
    names = _imported(*args)
    assert "regionshards" in names and "click" in names  # the parse worked: these lines were read
    assert not names & set(HEAVY), f"`regionshards {' '.join(args)}` imported {sorted(names & set(HEAVY))}"


def _heavy_after_importing(*modules: str) -> str:
    """The heavy modules loaded by a fresh interpreter after ``import MODULES`` (as a printed sorted list)."""
    code = f"import sys, {', '.join(modules)}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=True).stdout.strip()


def test_no_command_module_imports_a_heavy_module() -> None:
    out = _heavy_after_importing("regionshards.cli.main")
    assert out == "[]", f"importing the CLI (all {len(main.commands)} commands) loads {out}"


def test_the_readers_import_no_heavy_module() -> None:
    """`verify`, `failures` and the reports start reading before any kernel is needed: the shard readers and
    verify load numba (for the RLE decode) on the first sample that needs it, not on import."""
    out = _heavy_after_importing("regionshards.shards", "regionshards.shards.verify", "regionshards.report.failures")
    assert out == "[]", f"importing the readers loads {out}"
