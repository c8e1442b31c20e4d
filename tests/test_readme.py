"""The README stays true: every fenced ``bash`` block runs (in order, in a temporary copy of the repository, as
one ``bash -e`` script each) and every ``python`` block runs (in a fresh interpreter there), on the bundled data.

The only blocks not run as written are the set-up ones that create the virtual environment (``python3 -m venv``):
the test runs in an environment that already exists, so it skips them with that reason, after running every
``regionshards`` command they contain. Blocks in other languages (``json``, ``text``, unlabelled) are not code.
``regionshards`` on the scripts' PATH is this checkout's CLI, run with the interpreter running the tests.

Besides, the README must show every CLI command, every training method and every export format in a block that
runs, so that a command added to the CLI without a README line fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL = {"bash", "sh", "shell"}  # not `console`: its lines carry prompts and output
PYTHON = {"python", "py", "python3"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_IGNORE = shutil.ignore_patterns(".git", ".venv", "out", "runs", "__pycache__", "*.egg-info", ".pytest_cache",
                                 ".ruff_cache", ".hypothesis", "build", "dist")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language (first word of the info string), code (dedented) and 1-based line."""

    lang: str
    code: str
    line: int

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang}"

    @property
    def is_setup(self) -> bool:
        return self.lang in SHELL and "python3 -m venv" in self.code


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, indented ones (inside lists) included."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and set(lines[j].strip()) == {fence[0]}):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"README.md:{i + 1}: code block never closed")
        info = m.group("info").strip().split()
        blocks.append(Block(info[0].lower() if info else "", "\n".join(body) + "\n", i + 1))
        i = j + 1
    return blocks


def cli_invocations(script: str) -> list[list[str]]:
    """The arguments of every ``regionshards`` call in a shell script, ``torchrun … -m regionshards …`` included."""
    out = []
    for part in re.split(r"&&|;|\n|\|\|", script.replace("\\\n", " ")):
        words = shlex.split(part, comments=True)
        for i, word in enumerate(words):
            if Path(word).name == "regionshards" and (i == 0 or words[i - 1] == "-m"):
                out.append(words[i + 1:])
                break
    return out


def regionshards_commands(script: str) -> list[str]:
    """``cli_invocations`` as commands: ``.venv/bin/regionshards build …`` → ``regionshards build …``."""
    return [shlex.join(["regionshards", *args]) for args in cli_invocations(script)]


BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"))
RUNNABLE = [b for b in BLOCKS if b.lang in SHELL | PYTHON]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the repository (no outputs, no caches) and the environment the blocks run in."""
    work = tmp_path_factory.mktemp("readme") / "repo"
    shutil.copytree(ROOT, work, ignore=_IGNORE, symlinks=True)
    bin_dir = work.parent / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "regionshards"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m regionshards \"$@\"\n", encoding="utf-8")
    shim.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        # the code under test is this checkout's (the copy has the same sources; numba's cache stays warm here)
        "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")] if p),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "HF_HOME": str(work.parent / "hf-home"),  # Hugging Face's cache, not the user's
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    return work, env


def _run(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed with exit status {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                    f"\n--- stderr\n{proc.stderr[-6000:]}", pytrace=False)


def _run_block(block: Block, work: Path, env: dict[str, str]) -> None:
    if block.lang in PYTHON:
        script = work.parent / f"readme-{block.id}.py"
        script.write_text(block.code, encoding="utf-8")
        _run([sys.executable, str(script)], work, env, f"README.md:{block.line} (python)")
    else:
        _run(["bash", "-e", "-o", "pipefail", "-c", block.code], work, env, f"README.md:{block.line} (bash)")


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_readme_block_runs(block: Block, workdir: tuple[Path, dict[str, str]]) -> None:
    work, env = workdir
    if block.is_setup:
        commands = regionshards_commands(block.code)
        if commands:
            _run(["bash", "-e", "-c", "\n".join(commands)], work, env,
                 f"README.md:{block.line}: the regionshards commands of the set-up block")
        pytest.skip(f"README.md:{block.line} creates the virtual environment (the tests run in one already); "
                    f"its regionshards commands ran: {commands or 'none'}")
    _run_block(block, work, env)


def _option_values(calls: list[list[str]], command: str, option: str) -> set[str]:
    return {c[c.index(option) + 1] for c in calls if c and c[0] == command and option in c[:-1]}


def test_the_readme_shows_every_command_method_and_export() -> None:
    from regionshards.cli.main import main

    calls = [c for b in RUNNABLE if b.lang in SHELL for c in cli_invocations(b.code)]
    missing = set(main.commands) - {c[0] for c in calls if c}
    assert not missing, f"commands without a README example: {sorted(missing)}"
    methods = set(next(p for p in main.commands["train"].params if p.name == "method").type.choices)
    assert methods - _option_values(calls, "train", "--method") == set(), "training methods without an example"
    formats = set(next(p for p in main.commands["export"].params if p.name == "fmt").type.choices)
    shown = _option_values(calls, "export", "--format") | ({"torchvision"} if any(
        c[0] == "export" and "--format" not in c for c in calls if c) else set())
    assert formats - shown == set(), "export formats without an example"


def test_the_harness_finds_blocks_and_commands() -> None:
    text = "a\n```bash\nx && .venv/bin/regionshards build a b --k 1 && y\n```\n  - item\n    ```python\n" \
           "    print(1)\n      print(2)\n    ```\n```json\n{}\n```\n"
    blocks = fenced_blocks(text)
    assert [(b.lang, b.line) for b in blocks] == [("bash", 2), ("python", 6), ("json", 10)]
    assert blocks[1].code == "print(1)\n  print(2)\n"
    assert regionshards_commands(blocks[0].code) == ["regionshards build a b --k 1"]
    assert cli_invocations("torchrun --nproc-per-node 2 -m regionshards train --x 1\nls regionshards") == [
        ["train", "--x", "1"]]
    assert [b.id for b in BLOCKS if b.is_setup] == [b.id for b in BLOCKS[:2]]  # the two set-up blocks on top
    with pytest.raises(ValueError, match="never closed"):
        fenced_blocks("```bash\nls\n")


def test_the_docs_link_only_inside_the_repository() -> None:
    docs = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "data" / "sample" / "README.md"]
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text, f"{doc.relative_to(ROOT)} refers to a folder a clone does not have"
        outside = re.search(r"\bseeds?/|\bseed 0\d\d\b", text)
        assert not outside, f"{doc.relative_to(ROOT)} cites {outside.group()!r}, a file outside the repository"
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor in the same page
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            assert path.exists() and ROOT in path.parents, f"{doc.relative_to(ROOT)}: broken link {target}"
