"""transformers' shared model tests (`ModelTesterMixin`, `ConfigTester`, the feature-extraction mixins), taken from the
source release (sdist) of the installed transformers version: the wheel does not ship `tests/`.

The files are fetched once with pip into a cache outside the repository (`AUDIOMOSAIC_TRANSFORMERS_TESTS`, default
`~/.cache/audiomosaic/transformers-tests/<version>`) and imported from there as a package. The sdist ships only the
top-level `tests/*.py`; three sibling modules the common files import are not in it, so they get stand-ins:
- `exporters/test_export.py` (`ExportTesterMixin`): empty, so the exporter tests do not run (AudioMosaic's own ONNX
  export has tests/test_onnx.py);
- `generation/test_utils.py` (`GenerationTesterMixin`): empty; no AudioMosaic encoder model generates text;
- `utils/test_configuration_utils.py` (`config_common_kwargs`): empty, so `ConfigTester.check_config_arguments_init`
  would check nothing and the test module leaves it out.

Run this file (`python tests/fetch_transformers_tests.py`) to fetch the files ahead of the tests, e.g. in CI.
"""

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers


PACKAGE = "transformers_common_tests"
# The common files the AudioMosaic test module runs, as they sit in the sdist's tests/ folder.
COMMON_FILES = (
    "test_modeling_common.py",
    "test_configuration_common.py",
    "test_feature_extraction_common.py",
    "test_sequence_feature_extraction_common.py",
)
# Sibling modules the common files import that the sdist does not ship: path -> stand-in source.
STAND_INS = {
    "exporters/test_export.py": '"""Stand-in: the exporter tests are not in the sdist."""\n\n\n'
    "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": '"""Stand-in: the generation tests are not in the sdist."""\n\n\n'
    "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": '"""Stand-in: the common config kwargs table is not in the sdist."""\n\n'
    "config_common_kwargs = {}\n",
}
FETCH_TIMEOUT_S = 600


def cache_dir(version: str = transformers.__version__) -> Path:
    root = os.environ.get("AUDIOMOSAIC_TRANSFORMERS_TESTS")
    base = Path(root) if root else Path.home() / ".cache" / "audiomosaic" / "transformers-tests"
    return base / version


def fetch(version: str = transformers.__version__) -> Path:
    """The folder holding the `transformers_common_tests` package for `version`, downloading the sdist first if
    the cache does not have it yet. Raises `RuntimeError` naming the cause when it cannot be had."""
    target = cache_dir(version)
    package = target / PACKAGE
    if (package / "__init__.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "transformers",
                   f"transformers=={version}", "--dest", scratch]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"`pip download` of the transformers {version} sdist did not finish: {error}") from error
        archives = sorted(Path(scratch).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"`pip download` of the transformers {version} sdist failed: {last_line}")
        staging = Path(scratch) / PACKAGE
        extract_common_files(archives[0], staging)
        target.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(package)  # atomic: a concurrent run either sees the whole package or none
        except OSError:
            if not (package / "__init__.py").is_file():
                raise
    return target


def extract_common_files(archive: Path, package: Path) -> None:
    """Write the common test files of the sdist `archive` and stand-ins for the siblings it lacks into `package`."""
    with tarfile.open(archive) as sdist:
        members = {Path(*Path(member.name).parts[1:]).as_posix(): member for member in sdist.getmembers()}
        missing = [name for name in COMMON_FILES if f"tests/{name}" not in members]
        if missing:
            raise RuntimeError(f"{archive.name} has no tests/{', tests/'.join(missing)}")
        package.mkdir(parents=True)
        for path in (*COMMON_FILES, *STAND_INS):
            destination = package / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            member = members.get(f"tests/{path}")
            if member is not None:
                with sdist.extractfile(member) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
            else:
                destination.write_text(STAND_INS[path])
    for folder in {package, *((package / path).parent for path in STAND_INS)}:
        (folder / "__init__.py").touch()


def import_common(module: str):
    """`transformers_common_tests.<module>` for the installed transformers, fetched if needed."""
    if PACKAGE not in sys.modules:  # registered as a package from the cache, without touching sys.path
        folder = fetch() / PACKAGE
        spec = importlib.util.spec_from_file_location(PACKAGE, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[PACKAGE])
    return importlib.import_module(f"{PACKAGE}.{module}")


if __name__ == "__main__":
    print(fetch() / PACKAGE)
