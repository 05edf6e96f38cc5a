"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) for AudioMosaic encoders.

    hear-validator modeling_audiomosaic.hear --model path/to/audiomosaic_folder

    from modeling_audiomosaic import hear
    model = hear.load_model("path/or/hub-id")              # any AudioMosaic folder (encoder, classifier, pretraining)
    scene = hear.get_scene_embeddings(audio, model)        # audio: (n_sounds, n_samples) float in [-1, 1] at 16 kHz
    frames, timestamps_ms = hear.get_timestamp_embeddings(audio, model)

Timestamp embeddings are the last block's patch tokens of each 160 ms time row, pooled over frequency
(`modeling_audiomosaic.embeddings.frame_embeddings`), at the rows' centres in milliseconds (87.5, 247.5, ...); HEAR
suggests at most 50 ms between timestamps, which a 16-frame patch cannot give, so the validator prints a warning
about it. Scene embeddings are the encoder's pooled output (`fc_norm` of the token mean), averaged over the windows
of clips longer than the model's length, as `audiomosaic embed` computes them.
"""

import os

import torch
from torch import nn

from .embeddings import frame_embeddings
from .feature_extraction_audiomosaic import AudioMosaicFeatureExtractor, average_windows
from .inputs import load_feature_extractor
from .modeling_audiomosaic import AudioMosaicModel
from .validation import ENCODER_KINDS, load_pretrained

# Windows per forward pass: bounds memory for the large batches HEAR's evaluation passes.
WINDOWS_PER_PASS = 16


class AudioMosaicHEARModel(nn.Module):
    """An AudioMosaic encoder and its feature extractor, with the attributes the HEAR API requires."""

    def __init__(self, encoder: AudioMosaicModel, feature_extractor: AudioMosaicFeatureExtractor):
        super().__init__()
        self.encoder = encoder.eval()
        self.feature_extractor = feature_extractor
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.scene_embedding_size = int(encoder.config.hidden_size)
        self.timestamp_embedding_size = int(encoder.config.hidden_size)


def load_model(model_file_path: str = "", **from_pretrained_kwargs) -> AudioMosaicHEARModel:
    """Load any AudioMosaic folder or Hub id (encoder, classifier or pretraining) as a HEAR model (its
    `preprocessor_config.json` gives the window length and normalisation; without one, the AudioSet extractor with the
    model's `max_length` is used). A missing path, another kind of model or an unreadable file is a `ValueError` /
    `OSError` naming it, before anything is built."""
    if not isinstance(model_file_path, (str, os.PathLike)) or not str(model_file_path):
        raise ValueError(f"load_model needs an AudioMosaic folder or Hub id (HEAR's --model argument), got "
                         f"{type(model_file_path).__name__} {str(model_file_path)[:80]!r}.")
    path = os.fspath(model_file_path)
    encoder = load_pretrained(AudioMosaicModel, path, ENCODER_KINDS, **from_pretrained_kwargs)
    return AudioMosaicHEARModel(encoder, load_feature_extractor(path, None, encoder.config.max_length))


def _check_audio(audio: torch.Tensor, model: AudioMosaicHEARModel) -> torch.Tensor:
    if not isinstance(model, AudioMosaicHEARModel):
        raise ValueError(f"Expected the model returned by load_model, got {type(model).__name__}.")
    expected = f"a 2-D float tensor (n_sounds, n_samples) at {model.sample_rate} Hz"
    if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
        raise ValueError(f"HEAR audio must be {expected}, got {type(audio).__name__} of shape "
                         f"{tuple(getattr(audio, 'shape', ()))}.")
    if not audio.is_floating_point():
        raise ValueError(f"HEAR audio must be {expected} with samples in [-1, 1], got dtype {audio.dtype}.")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError(f"HEAR audio must be {expected} with at least one sound and one sample, got shape "
                         f"{tuple(audio.shape)}.")
    return audio.detach().to(next(model.encoder.parameters()).device)


def get_timestamp_embeddings(audio: torch.Tensor, model: AudioMosaicHEARModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (n_sounds, n_timestamps, timestamp_embedding_size), timestamps (n_sounds, n_timestamps) in ms)."""
    audio = _check_audio(audio, model)
    frames = frame_embeddings(model.encoder, model.feature_extractor, audio,
                              names=[f"sound {index}" for index in range(audio.shape[0])])
    embeddings = torch.stack([f.embeddings for f in frames]).to(audio.device)
    timestamps = torch.stack([f.timestamps for f in frames]).to(audio.device) * 1000.0
    return embeddings, timestamps


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: AudioMosaicHEARModel) -> torch.Tensor:
    """(n_sounds, scene_embedding_size): the pooled output, averaged over windows for long sounds."""
    audio = _check_audio(audio, model)
    fe = model.feature_extractor
    batch = fe(audio, sampling_rate=fe.sampling_rate, long_audio="window", return_tensors="pt", device=audio.device)
    windows = batch["input_values"]
    pooled = torch.cat([model.encoder(windows[start: start + WINDOWS_PER_PASS]).pooler_output.float()
                        for start in range(0, len(windows), WINDOWS_PER_PASS)])
    return average_windows(pooled, batch["window_clip_index"], audio.shape[0])


__all__ = ["AudioMosaicHEARModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
