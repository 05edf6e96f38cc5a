"""The documentation runs: every fenced code block of README.md and docs/*.md whose info string carries `runnable`
(```python runnable, ```bash runnable) is executed, so the documentation fails the suite when it drifts from the code.

The blocks of one page run in order, in one temporary folder beside a link to ../shared (so `../shared/...` paths
work as from the repository root): python blocks share one namespace (like a notebook), bash blocks run with `bash -e
-o pipefail` and this interpreter's `bin/` first on PATH (`python`, `audiomosaic`). A page whose runnable blocks read
../shared is skipped where it is absent. Blocks marked `runnable slow` only run with AUDIOMOSAIC_DOCS_SLOW=1; later
blocks must not need their output. The convention is documented in docs/contributing.md; docs/_incoming/ (drafts
waiting to be merged into pages) is not collected.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```\s*$", re.M | re.S)
SLOW = os.environ.get("AUDIOMOSAIC_DOCS_SLOW", "") not in ("", "0")


@dataclass
class Block:
    page: str
    line: int
    language: str
    code: str
    slow: bool


def documentation_pages() -> list[Path]:
    return [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if "_incoming" not in p.parts)]


def runnable_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        words = match["info"].split()
        if len(words) < 2 or "runnable" not in words[1:]:
            continue
        if words[0] not in ("python", "bash"):
            raise ValueError(f"{page.name}: only python and bash blocks can be runnable, got {words[0]!r}.")
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(str(page.relative_to(REPO)), line, words[0], match["code"], "slow" in words[1:]))
    return blocks


PAGES = {str(page.relative_to(REPO)): runnable_blocks(page) for page in documentation_pages()}

# Runs the blocks given as JSON on stdin; reports the first failing block by page and line.
DRIVER = textwrap.dedent("""
    import json, subprocess, sys
    namespace = {"__name__": "__main__"}
    for block in json.load(sys.stdin):
        where = f"{block['page']}:{block['line']}"
        print(f"--- {where} ({block['language']})", flush=True)
        if block["language"] == "python":
            exec(compile(block["code"], where, "exec"), namespace)
        else:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]])
            if done.returncode:
                sys.exit(f"{where}: the bash block exited with status {done.returncode}")
""")


def test_the_readme_and_the_pages_have_runnable_blocks():
    assert PAGES["README.md"], "the README's quick start should be runnable"
    assert sum(len(blocks) for blocks in PAGES.values()) >= 10


@pytest.mark.parametrize("page", [name for name, blocks in PAGES.items() if blocks])
def test_documentation_blocks_run(page, tmp_path):
    blocks = [b for b in PAGES[page] if SLOW or not b.slow]
    if any("../shared" in b.code for b in blocks) and not SHARED.is_dir():
        pytest.skip(f"{page} reads ../shared, which is absent")
    work = tmp_path / "work"
    work.mkdir()
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    payload = json.dumps([b.__dict__ for b in blocks])
    done = subprocess.run([sys.executable, "-c", DRIVER], input=payload, cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{page}: a block failed\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
