"""Time-aligned frame embeddings, segment timelines (Python and CLI), the pipeline's truncation warning and the
--dtype switch."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from modeling_audiomosaic import (
    AudioMosaicConfig,
    AudioMosaicFeatureExtractor,
    AudioMosaicForAudioClassification,
    AudioMosaicModel,
)
from modeling_audiomosaic import cli
from modeling_audiomosaic.embeddings import band_statistics, classify_segments, frame_embeddings


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=128)
LABELS = ["kick", "snare", "hihat"]


@pytest.fixture(scope="module")
def encoder() -> AudioMosaicModel:
    torch.manual_seed(0)
    return AudioMosaicModel(AudioMosaicConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def extractor() -> AudioMosaicFeatureExtractor:
    return AudioMosaicFeatureExtractor.from_preset("speechcommands")  # 128-frame windows


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    config = AudioMosaicConfig(**TINY, num_labels=3, id2label=dict(enumerate(LABELS)),
                               label2id={label: i for i, label in enumerate(LABELS)})
    path = tmp_path_factory.mktemp("timeline_model")
    AudioMosaicForAudioClassification(config).save_pretrained(path)
    AudioMosaicFeatureExtractor.from_preset("speechcommands").save_pretrained(path)
    return path


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * 16000))).astype(np.float32)


def test_timestamps_of_a_61_3_second_clip(encoder, extractor):
    frames = frame_embeddings(encoder, extractor, noise(61.3))[0]
    # 980 800 samples -> 6128 Kaldi frames -> 383 full rows of 16; row r is centred at 0.16 r + 0.0875 s.
    assert frames.embeddings.shape == (383, 32)
    assert frames.timestamps[0].item() == pytest.approx(0.0875)
    assert frames.timestamps[-1].item() == pytest.approx(61.2075)
    assert torch.allclose(frames.timestamps.diff(), torch.tensor(0.16), atol=1e-4)


@pytest.mark.parametrize("window_hop", [32, 64])
def test_every_row_comes_from_the_window_where_it_is_most_central(encoder, extractor, window_hop):
    clip = noise(5.0, seed=1)
    frames = frame_embeddings(encoder, extractor, clip, window_hop=window_hop)[0]
    # Reference: encode every window on its own and pick, by brute force, the window whose centre is nearest.
    windows = extractor(clip, sampling_rate=16000, long_audio="window", window_hop=window_hop, return_tensors="pt")
    with torch.no_grad():
        tokens = encoder(windows["input_values"]).last_hidden_state[:, 1:]
    rows = tokens.reshape(len(tokens), 8, 8, -1).mean(dim=2)  # (windows, 8 rows of a 128-frame window, dim)
    hop_rows, chosen = window_hop // 16, []
    for r in range(len(frames.timestamps)):
        candidates = [w for w in range(len(rows)) if 0 <= r - w * hop_rows < 8]
        best = min(candidates, key=lambda w: abs(r - w * hop_rows + 0.5 - 4))
        chosen.append(best)
        torch.testing.assert_close(frames.embeddings[r], rows[best, r - best * hop_rows])
    assert len(set(chosen)) == len(rows)  # the stitching really used every window


def test_padding_never_gives_rows_past_the_end(encoder, extractor):
    for frames_in_clip in (100, 103, 104, 240):
        clip = noise((400 + 160 * (frames_in_clip - 1)) / 16000)  # exactly `frames_in_clip` Kaldi frames
        frames = frame_embeddings(encoder, extractor, clip)[0]
        assert len(frames.timestamps) == frames_in_clip // 16 + (frames_in_clip % 16 >= 8)
        assert frames.timestamps[-1].item() <= len(clip) / 16000


def test_layers_and_batches(encoder, extractor):
    clips = [noise(0.9, seed=2), noise(3.3, seed=3)]
    both = frame_embeddings(encoder, extractor, clips, layers=[0, -1], batch_size=2)
    assert [f.embeddings.shape for f in both] == [(6, 2, 32), (21, 2, 32)]  # 88 and 328 frames
    assert both[0].layers == [0, 2]
    alone = frame_embeddings(encoder, extractor, clips[1], layers=2)[0]
    torch.testing.assert_close(alone.embeddings, both[1].embeddings[:, 1])
    # A short clip is one window: its rows are the frequency-pooled tokens of one forward pass.
    with torch.no_grad():
        out = encoder(**extractor(clips[0], sampling_rate=16000, return_tensors="pt"), output_hidden_states=True)
    torch.testing.assert_close(both[0].embeddings[:, 0], out.hidden_states[0][0, 1:49].reshape(6, 8, -1).mean(1))


def test_bad_arguments_are_named(encoder, extractor):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        frame_embeddings(encoder, extractor, noise(3.0), window_hop=40)
    with pytest.raises(ValueError, match="out of range"):
        frame_embeddings(encoder, extractor, noise(1.0), layers=5)


def test_reduced_precision_frames_stay_close_and_float32(encoder, extractor):
    reference = frame_embeddings(encoder, extractor, noise(2.0))[0].embeddings
    half = AudioMosaicModel(encoder.config).eval()
    half.load_state_dict(encoder.state_dict())
    frames = frame_embeddings(half.to(torch.bfloat16), extractor, noise(2.0))[0].embeddings
    assert frames.dtype == torch.float32
    assert 0 < (frames - reference).abs().max() < 0.1 * reference.abs().max()


def test_segment_timeline(classifier_dir):
    model = AudioMosaicForAudioClassification.from_pretrained(classifier_dir).eval()
    fe = AudioMosaicFeatureExtractor.from_pretrained(classifier_dir)
    clip = noise(4.0, seed=4)  # 398 frames: 6 windows of 128 frames, 64 apart; the last one ends with the audio
    timeline = classify_segments(model, fe, clip, names=["x.wav"])[0]
    assert timeline.starts.tolist() == pytest.approx([0.0, 0.64, 1.28, 1.92, 2.56, 3.2])
    assert timeline.ends.tolist() == pytest.approx([1.295, 1.935, 2.575, 3.215, 3.855, 3.995])
    torch.testing.assert_close(timeline.scores.sum(dim=1), torch.ones(6))
    windows = fe(clip, sampling_rate=16000, long_audio="window", return_tensors="pt")
    with torch.no_grad():
        logits = model(windows["input_values"]).logits
    expected = logits.softmax(-1)
    torch.testing.assert_close(timeline.scores, expected)
    top = timeline.top(2)
    assert [p["label"] for p in top[0]["predictions"]] == [LABELS[i] for i in expected[0].argsort(descending=True)[:2]]

    model.config.problem_type = "multi_label_classification"
    multi = classify_segments(model, fe, clip)[0]
    assert multi.multi_label
    torch.testing.assert_close(multi.scores, logits.sigmoid())


def test_classify_timeline_cli(classifier_dir, tmp_path):
    import soundfile as sf

    wav = tmp_path / "long.wav"
    sf.write(wav, noise(3.0, seed=5), 16000)
    rows = cli.run(["classify", str(wav), "--model", str(classifier_dir), "--timeline", "--format", "csv", "--top_k",
                    "2", "--output", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png"), "--quiet"])
    table = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert [row["start"] for row in table] == ["0.000", "0.640", "1.280", "1.920"]
    assert float(table[-1]["end"]) == pytest.approx(2.995)
    assert table[0]["label_1"] == rows[0]["segments"][0]["predictions"][0]["label"]
    assert (tmp_path / "t.png").stat().st_size > 10_000
    out = cli.run(["classify", str(wav), "--model", str(classifier_dir), "--timeline", "--format", "json",
                   "--output", str(tmp_path / "t.json"), "--dtype", "bfloat16", "--quiet"])
    assert json.loads((tmp_path / "t.json").read_text())[0]["segments"][0]["end"] == pytest.approx(1.295)
    assert len(out[0]["segments"]) == 4
    with pytest.raises(SystemExit):
        cli.run(["classify", str(wav), "--model", str(classifier_dir), "--plot", str(tmp_path / "x.png")])


def test_embed_frames_cli(classifier_dir, tmp_path):
    import soundfile as sf

    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    sf.write(files[0], noise(1.0, seed=6), 16000)
    sf.write(files[1], noise(2.5, seed=7), 16000)
    output = tmp_path / "frames.safetensors"
    cli.run(["embed", *map(str, files), "--model", str(classifier_dir), "--frames", "--layers", "0,2", "--output",
             str(output), "--quiet"])
    with safe_open(str(output), "pt") as handle:
        embeddings, timestamps, clip_index = (handle.get_tensor(k) for k in ("embeddings", "timestamps", "clip_index"))
        assert json.loads(handle.metadata()["frames_per_file"]) == [6, 16]  # 98 and 248 Kaldi frames
    assert embeddings.shape == (22, 2, 32)
    assert clip_index.tolist() == [0] * 6 + [1] * 16
    assert timestamps[6].item() == pytest.approx(0.0875)


def test_pipeline_warns_once_when_it_truncates(classifier_dir):
    from transformers import pipeline

    classifier = pipeline("audio-classification", model=str(classifier_dir))
    logger = logging.get_logger("modeling_audiomosaic.feature_extraction_audiomosaic")
    with CaptureLogger(logger) as captured:
        classifier(noise(3.0))
        classifier(noise(3.0, seed=1))
    assert captured.out.count("truncated to its first 128 frames") == 1
    assert "classify_segments" in captured.out
    fe = AudioMosaicFeatureExtractor.from_pretrained(classifier_dir)
    with CaptureLogger(logger) as captured:
        fe(noise(0.5), sampling_rate=16000)
        fe(noise(3.0), sampling_rate=16000, truncation=True)
    assert captured.out == ""


@pytest.mark.parametrize("command, option", [("embed", "--frames"), ("classify", "--timeline"),
                                             ("classify", "--plot"), ("export-onnx", "--int8")])
def test_new_options_have_help(command, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run([command, "--help"])
    assert exit_info.value.code == 0 and option in capsys.readouterr().out


def test_band_statistics_pool_each_frequency_band_over_the_real_time_rows():
    """The log-Mel baseline's pooling (mean + std over time per frequency band) applied to the patch tokens, over
    the real time rows only."""
    torch.manual_seed(0)
    model = AudioMosaicModel(AudioMosaicConfig(**{**TINY, "max_length": 64, "num_mel_bins": 64})).eval()
    inputs = torch.randn(2, 64, 64)
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[0, 40:] = 0  # clip 0: 40 real frames -> time rows 0-2 are real (row 2 has 8 real frames), row 3 is padding
    features = band_statistics(model, inputs, mask, batch_size=1)
    assert features.shape == (2, 2 * 4 * 32)
    with torch.no_grad():
        output = model(inputs, attention_mask=mask)
        tokens = model(inputs).last_hidden_state[:, 1:]
    # The model's own padding mask confirms the token layout the pooling assumes: time rows of 4 frequency bands.
    assert output.token_mask[0, 1:].reshape(4, 4).tolist() == [[True] * 4] * 3 + [[False] * 4]
    grid = tokens.reshape(2, 4, 4, 32)
    for clip, rows in ((0, 3), (1, 4)):
        expected = torch.cat([grid[clip, :rows].mean(0), grid[clip, :rows].std(0, unbiased=False)])
        torch.testing.assert_close(features[clip], expected.flatten(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"`attention_mask` must be \(clips, frames\) = \(2, 64\)"):
        band_statistics(model, inputs, mask[:, :32])
