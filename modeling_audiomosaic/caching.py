"""One way to key and write the on-disk caches (the probe's features, the interpretability activations, the
normalisation statistics): a fingerprint of what a cached result depends on, and writes that a concurrent or
interrupted run never sees half done."""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-1 of a model's full config and parameter bytes: a random-init and a trained encoder never share a key."""
    digest = hashlib.sha1(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(*parts) -> str:
    """A short key (20 hex digits) of JSON-serialisable `parts` (anything else is written with `str`)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; it replaces `path` only when the block finishes, so readers
    see the old file or the complete new one (and an error leaves no partial file behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path` to write a whole output (a checkpoint, an export) into; its entries move
    into `path` (created if needed; entries of the same names replaced) only when the block finishes, so an error
    leaves `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield partial
        path.mkdir(exist_ok=True)
        for entry in partial.iterdir():
            target = path / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
