"""The one cache helper (modeling_audiomosaic/caching.py) behind the probe, activation and norm-stats caches."""

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicModel
from modeling_audiomosaic.caching import atomic_write, fingerprint, model_fingerprint


def tiny_encoder(seed: int) -> AudioMosaicModel:
    torch.manual_seed(seed)
    return AudioMosaicModel(AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=64, max_length=128))


def test_model_fingerprint_follows_the_weights():
    assert model_fingerprint(tiny_encoder(0)) == model_fingerprint(tiny_encoder(0))
    assert model_fingerprint(tiny_encoder(0)) != model_fingerprint(tiny_encoder(1))


def test_fingerprint_sees_every_part():
    files = [f"/clips/{i}.wav" for i in range(50)]
    assert fingerprint(files, {"a": 1}) == fingerprint(list(files), {"a": 1})
    assert fingerprint(files, {"a": 1}) != fingerprint(files[:-1] + ["/clips/other.wav"], {"a": 1})
    assert fingerprint(files, {"a": 1}) != fingerprint(files, {"a": 2})


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "sub" / "cache.json"
    with atomic_write(path) as partial:
        partial.write_text("new")
        assert not path.exists()
    assert path.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_write(path) as partial:
            partial.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "new" and list(path.parent.iterdir()) == [path]


def test_probe_cache_key_sees_clips_past_the_fifth():
    """`datasets`' lazy column prints only five values; the probe's key must depend on all of them."""
    from audiomosaic_training.probe import cache_fingerprint

    encoder = tiny_encoder(0)
    data_args = SimpleNamespace(truncate_samples=None, sampling_rate=16000)

    def key(paths):
        split = Dataset.from_dict({"audio": paths})
        prepared = SimpleNamespace(train_hf=split, eval_hf=split, max_length=128,
                                   feature_extractor=SimpleNamespace(to_json_string=lambda: "{}"))
        return cache_fingerprint(encoder, prepared, data_args, "train")

    paths = [f"/clips/{i}.wav" for i in range(10)]
    assert key(paths) == key(list(paths))
    assert key(paths) != key(paths[:9] + ["/clips/other.wav"])
