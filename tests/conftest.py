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
LTU_FIXTURES = SHARED / "fixtures" / "ltu"
DATA = SHARED / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s on a 2-core CPU; deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "manifest.json").is_file():
        pytest.skip(f"official parity fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def ltu_fixtures_dir() -> Path:
    if not (LTU_FIXTURES / "manifest.json").is_file():
        pytest.skip(f"LTU parity fixtures not found at {LTU_FIXTURES}")
    return LTU_FIXTURES


@pytest.fixture(scope="session")
def manifest(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real audio not found at {DATA}")
    return DATA


def pytest_terminal_summary(terminalreporter):
    """Print the parity tables (max |error| per fixture tensor) of the parity tests that ran."""
    modules = __import__("sys").modules
    for module_name, title in (("test_parity", "the authors' code"), ("test_ltu", "the authors' LTU code")):
        module = modules.get(module_name) or modules.get(f"tests.{module_name}")
        table = getattr(module, "PARITY_TABLE", None)
        if table:
            terminalreporter.write_sep("-", f"parity with {title}: max |error| per fixture tensor")
            for name in sorted(table):
                terminalreporter.write_line(f"{name:70s} {table[name]:.2e}")


def write_speechcommands_subset(data_dir: Path, words: list[str], per_word_and_fold: int, audio_column: str,
                                csv_path: Path) -> Path:
    """Write a CSV of `per_word_and_fold` Speech Commands clips per word in folds 1 and 5 (absolute paths, no audio
    copied); skips the test when the data set is absent."""
    import csv

    root = data_dir / "speechcommands_test"
    if not (root / "meta.csv").is_file():
        pytest.skip(f"speechcommands_test not found in {data_dir}")
    rows, counts = [], {}
    with open(root / "meta.csv") as handle:
        for row in csv.DictReader(handle):
            key = (row["label"], row["fold"])
            if row["label"] in words and row["fold"] in ("1", "5") and counts.get(key, 0) < per_word_and_fold:
                counts[key] = counts.get(key, 0) + 1
                rows.append(row)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([audio_column, "label", "fold"])
        writer.writerows([str((root / row["filename"]).resolve()), row["label"], row["fold"]] for row in rows)
    return csv_path
