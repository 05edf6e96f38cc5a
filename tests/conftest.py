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
    config.addinivalue_line("markers", "shared: needs ../shared (the authors' parity fixtures or real audio); skipped "
                                       "where it is absent, selected with -m shared")


def pytest_collection_modifyitems(items):
    """Every test that uses the ../shared fixtures is marked `shared`, so `-m "not shared"` runs anywhere."""
    for item in items:
        if {"data_dir", "fixtures_dir", "ltu_fixtures_dir", "manifest"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


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


def torchaudio_loads() -> bool:
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def check_pipeline_resamples_dict(classifier, array, sampling_rate: int, check_result, **call_kwargs) -> None:
    """transformers' audio-classification pipeline resamples `{"array", "sampling_rate"}` inputs itself, with
    torchaudio: with torchaudio the result goes to `check_result`; without it the pipeline must say it needs it."""
    inputs = {"array": array, "sampling_rate": sampling_rate}
    if torchaudio_loads():
        check_result(classifier(inputs, **call_kwargs))
    else:
        with pytest.raises(ImportError, match="torchaudio is required to resample"):
            classifier(inputs, **call_kwargs)


def import_torchaudio():
    """torchaudio, the independent reference for the front end, or skip: it is optional (the `[torchaudio]` extra) and
    a build made for another torch fails to load with OSError rather than ImportError."""
    try:
        import torchaudio
    except (ImportError, OSError) as error:
        pytest.skip(f"torchaudio (the reference implementation) cannot be imported here: {error}")
    return torchaudio


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


# Classes of the generated set: noise in one frequency band each (Hz), so that even a random encoder tells them apart.
SYNTHETIC_LABELS = {"low": (100.0, 600.0), "mid": (1000.0, 2500.0), "high": (4000.0, 7500.0)}


@pytest.fixture(scope="session")
def synthetic_clips(tmp_path_factory) -> Path:
    """A small labelled audio set written by the test session, laid out like ../shared/data's sets, so that unit tests
    run anywhere: `meta.csv` (filename, label, fold) and `audio/<label>/<name>.flac|.wav`; 4 clips per class in each
    of folds 1-5, 16 kHz mono, 0.6-1 s of band-limited noise with a random gain and a short fade in and out."""
    import csv

    import numpy as np
    import soundfile

    root = tmp_path_factory.mktemp("synthetic_clips")
    rng = np.random.default_rng(0)
    rows = []
    for label, (low, high) in SYNTHETIC_LABELS.items():
        (root / "audio" / label).mkdir(parents=True)
        for fold in range(1, 6):
            for k in range(4):
                length = int(16000 * rng.uniform(0.6, 1.0))
                spectrum = np.fft.rfft(rng.standard_normal(length))
                frequencies = np.fft.rfftfreq(length, 1 / 16000)
                spectrum[(frequencies < low) | (frequencies > high)] = 0
                clip = np.fft.irfft(spectrum, length)
                fade = np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / 800)
                clip = rng.uniform(0.05, 0.3) * fade * clip / np.abs(clip).max()
                name = f"audio/{label}/{label}_{fold}_{k}.{'flac' if k % 2 else 'wav'}"
                soundfile.write(root / name, clip.astype(np.float32), 16000)
                rows.append((name, label, fold))
    with open(root / "meta.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label", "fold"])
        writer.writerows(rows)
    return root


def write_subset(root: Path, labels: list[str], per_label_and_fold: int, audio_column: str, csv_path: Path) -> Path:
    """Write a CSV of `per_label_and_fold` clips per label in folds 1 and 5 of a set laid out like ../shared/data's
    (`root/meta.csv` with filename, label, fold), with absolute paths (no audio copied)."""
    import csv

    rows, counts = [], {}
    with open(root / "meta.csv") as handle:
        for row in csv.DictReader(handle):
            key = (row["label"], row["fold"])
            if row["label"] in labels and row["fold"] in ("1", "5") and counts.get(key, 0) < per_label_and_fold:
                counts[key] = counts.get(key, 0) + 1
                rows.append(row)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([audio_column, "label", "fold"])
        writer.writerows([str((root / row["filename"]).resolve()), row["label"], row["fold"]] for row in rows)
    return csv_path
