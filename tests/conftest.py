"""Shared test fixtures. Tests read the authors' parity fixtures and real audio from `../shared` beside the checkout
(never copied into the repository) and skip with a reason when it is absent."""

import json
import os
from pathlib import Path

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "official"
DATA = SHARED / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s on a 2-core CPU; deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "manifest.json").is_file():
        pytest.skip(f"official parity fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def manifest(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real audio not found at {DATA}")
    return DATA


def pytest_terminal_summary(terminalreporter):
    """Print the parity table (max |error| per official fixture tensor) when the parity tests ran."""
    module = __import__("sys").modules.get("test_parity") or __import__("sys").modules.get("tests.test_parity")
    table = getattr(module, "PARITY_TABLE", None)
    if table:
        terminalreporter.write_sep("-", "parity with the authors' code: max |error| per fixture tensor")
        for name in sorted(table):
            terminalreporter.write_line(f"{name:70s} {table[name]:.2e}")
