"""Time-aligned frame embeddings and per-segment predictions (event timelines) for audio of any length, and
clip features that keep the frequency bands apart (band statistics).

    from modeling_audiomosaic import AudioMosaicModel, AudioMosaicFeatureExtractor
    from modeling_audiomosaic.embeddings import frame_embeddings, classify_segments

    frames = frame_embeddings(encoder, extractor, ["long.wav", waveform])  # one FrameEmbeddings per clip
    frames[0].timestamps, frames[0].embeddings                              # (rows,) seconds, (rows, dim)
    timeline = classify_segments(classifier, extractor, "long.wav")[0]     # SegmentScores
    timeline.to_csv("timeline.csv"); plot_timeline(timeline, "timeline.png")
    batch = extractor(waveforms, return_attention_mask=True, return_tensors="pt")
    band_statistics(encoder, batch["input_values"], batch["attention_mask"])  # (clips, 2 * 8 * dim) clip features

Patch tokens are time-major (token 1 + t * F' + f for time row t and frequency patch f, token 0 is cls), so one time
row of 16 frames (160 ms) is the mean of its F' = 8 frequency tokens. Audio longer than the model's `max_length` is
cut into overlapping windows by the feature extractor (`long_audio="window"`), and each output row is taken from the
window in which it lies most centrally (the most context on both sides).
"""

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .kaldi_audiomosaic import FRAME_LENGTH_MS, FRAME_SHIFT_MS
from .validation import check_value, integer, is_a


@dataclass
class FrameEmbeddings:
    """One clip's time-aligned embeddings.

    `embeddings` is (rows, dim), or (rows, len(layers), dim) when layers were requested; `timestamps` (rows,) is the
    centre of each row in seconds (the mean of its 16 frame centres: 0.0875 s, 0.2475 s, ... at 16 kHz). A row is
    returned when its centre lies inside the audio, i.e. when at least 8 of its 16 frames are real: padding never
    produces a row past the end of the clip."""

    embeddings: torch.Tensor
    timestamps: torch.Tensor
    layers: list[int] | None = None


@dataclass
class SegmentScores:
    """Per-segment class scores of one clip: `scores` (segments, classes) are probabilities (sigmoid for multi-label
    models, softmax otherwise); segment i spans `starts[i]`..`ends[i]` seconds (one window of the model's length,
    cut at the end of the audio)."""

    starts: torch.Tensor
    ends: torch.Tensor
    scores: torch.Tensor
    labels: list[str]
    multi_label: bool = False
    name: str = field(default="<audio>")

    def top(self, k: int = 3) -> list[dict]:
        """[{"start", "end", "predictions": [{"label", "score"}, ...]}] with the k best labels of each segment."""
        k = check_value("top_k", k, integer(minimum=1))
        values, indices = self.scores.topk(min(k, self.scores.shape[1]), dim=1)
        return [
            {"start": round(start, 3), "end": round(end, 3),
             "predictions": [{"label": self.labels[i], "score": round(v, 6)} for v, i in zip(row_v, row_i)]}
            for start, end, row_v, row_i in zip(self.starts.tolist(), self.ends.tolist(), values.tolist(),
                                                indices.tolist())
        ]

    def to_csv(self, path: str | os.PathLike | None = None, top_k: int = 3) -> str:
        """CSV with one row per segment: file, start, end, label_1, score_1, ..., label_k, score_k."""
        return _write_text(timelines_to_csv([self], top_k), path)

    def to_json(self, path: str | os.PathLike | None = None, top_k: int = 3) -> str:
        return _write_text(json.dumps({"file": self.name, "segments": self.top(top_k)}, indent=2), path)


def _write_text(text: str, path: str | os.PathLike | None) -> str:
    if path is not None:
        Path(path).write_text(text)
    return text


def frame_centre_seconds(frame_index: torch.Tensor | float) -> torch.Tensor | float:
    """Centre in seconds of Kaldi frame `frame_index` (25 ms frames every 10 ms; frame k starts at k * 10 ms)."""
    return (frame_index * FRAME_SHIFT_MS + FRAME_LENGTH_MS / 2) / 1000


def _base_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The AudioMosaicModel inside a classifier / pretraining model (transformers' `base_model`), or the model."""
    encoder = getattr(model, "base_model", model)
    if not is_a(encoder, "AudioMosaicModel"):
        raise ValueError(f"Expected an AudioMosaic model (encoder, classifier or pretraining), got "
                         f"{type(model).__name__}.")
    return encoder


def _check_extractor(feature_extractor) -> None:
    if not is_a(feature_extractor, "AudioMosaicFeatureExtractor"):
        raise ValueError(f"Expected the model's AudioMosaicFeatureExtractor, got {type(feature_extractor).__name__}.")


def _windows(feature_extractor, audio, window_hop: int, sampling_rate: int | None, device: torch.device):
    """Windowed features of every clip plus, per clip, its first window index, window count and real frame count."""
    batch = feature_extractor(
        audio,
        sampling_rate=feature_extractor.sampling_rate if sampling_rate is None else sampling_rate,
        long_audio="window", window_hop=window_hop, return_tensors="pt", device=device,
    )
    clip_index = batch["window_clip_index"]
    counts = torch.bincount(clip_index).tolist()
    firsts = [sum(counts[:i]) for i in range(len(counts))]
    mask = batch["attention_mask"]
    # Window j of a clip starts at frame j * hop, so the clip's real frames end where its last window's mask ends.
    num_frames = [(count - 1) * window_hop + int(mask[first + count - 1].sum()) for first, count in zip(firsts, counts)]
    return batch["input_values"], mask, list(zip(firsts, counts, num_frames))


def _check_window_hop(window_hop: int | None, max_length: int, multiple: int = 1) -> int:
    if window_hop is None:
        return max(multiple, max_length // 2 // multiple * multiple)
    if isinstance(window_hop, bool) or not isinstance(window_hop, int) or not 0 < window_hop <= max_length:
        raise ValueError(f"`window_hop` must be an integer in [1, {max_length}] frames, got {window_hop!r}.")
    if window_hop % multiple:
        raise ValueError(
            f"`window_hop` must be a multiple of the patch size ({multiple} frames) so that the time rows of "
            f"overlapping windows line up, got {window_hop}."
        )
    return window_hop


@torch.no_grad()
def frame_embeddings(
    model: torch.nn.Module,
    feature_extractor,
    audio,
    layers: int | Sequence[int] | None = None,
    window_hop: int | None = None,
    batch_size: int = 16,
    mask_padding: bool = False,
    sampling_rate: int | None = None,
    names: Sequence[str] | None = None,
) -> list[FrameEmbeddings]:
    """Time-aligned embeddings, one vector per patch row (16 frames = 160 ms), for clips of any length.

    Args:
        model: an `AudioMosaicModel`, or a classifier / pretraining model (its encoder is used), in any dtype (the
            features stay float32 and are cast by the model; the embeddings are returned as float32 on the CPU).
        feature_extractor: the checkpoint's `AudioMosaicFeatureExtractor`; its `max_length` (a multiple of the patch
            size, at most the model's) is the window length.
        audio: one clip or a list of clips, in any form the feature extractor accepts (arrays, tensors, file paths).
        layers: `None` for the last block; an index into (embedding output, block 1, ..., block depth) for that
            entry; a sequence of indices for (rows, len(layers), dim) embeddings.
        window_hop: frames between window starts, a multiple of the patch size (default: half a window).
        batch_size: windows per forward pass.
        mask_padding: exclude the padding at the end of the last window from attention (the checkpoints were
            trained with padding included, as `audiomosaic embed` does by default).
        sampling_rate: rate of array inputs (default: the extractor's).
        names: what to call the clips in errors (e.g. their file paths; default "clip i").

    Returns:
        One [`FrameEmbeddings`] per clip. A row comes from the window in which its centre is closest to the window's
        centre, so rows far from the edges of a window are preferred; padding never produces rows past the clip's end.
        A clip too short for one row (under 8 frames, about 95 ms) is a `ValueError` naming it, not an empty result.
    """
    encoder = _base_encoder(model)
    _check_extractor(feature_extractor)
    batch_size = check_value("batch_size", batch_size, integer(minimum=1))
    config = encoder.config
    patch = config.patch_size
    max_length = feature_extractor.max_length
    if max_length % patch or max_length > config.max_length:
        raise ValueError(
            f"The feature extractor's max_length ({max_length}) must be a multiple of the patch size ({patch}) and at "
            f"most the model's max_length ({config.max_length})."
        )
    window_hop = _check_window_hop(window_hop, max_length, patch)
    entries = config.num_hidden_layers + 1
    single = layers is None or isinstance(layers, int)
    selected = None if layers is None else [layers] if isinstance(layers, int) else list(layers)
    for index in selected or []:
        if not -entries <= index < entries:
            raise ValueError(f"layer {index} is out of range: the model has {entries} entries "
                             f"(0 = embedding output, 1..{entries - 1} = blocks).")
    selected = None if selected is None else [index % entries for index in selected]

    device = next(encoder.parameters()).device
    values, mask, clips = _windows(feature_extractor, audio, window_hop, sampling_rate, device)
    # A row is kept when its centre (frame 16 r + 7.5) lies in the real frames: at least 8 of 16 are real.
    rows_per_clip = [num_frames // patch + (num_frames % patch >= patch // 2) for _, _, num_frames in clips]
    for index, ((_, _, num_frames), num_rows) in enumerate(zip(clips, rows_per_clip)):
        if num_rows == 0:
            name = names[index] if names is not None else f"clip {index}"
            raise ValueError(
                f"{name} is too short for frame embeddings: its {num_frames} frame(s) give no {patch}-frame row, which "
                f"needs at least {patch // 2} frames ({(patch // 2 - 1) * FRAME_SHIFT_MS + FRAME_LENGTH_MS:g} ms of "
                "audio)."
            )
    window_rows = max_length // patch
    num_freq = config.num_mel_bins // patch
    rows_per_window = []
    for start in range(0, len(values), batch_size):
        batch_mask = mask[start: start + batch_size] if mask_padding else None
        out = encoder(values[start: start + batch_size], attention_mask=batch_mask,
                      output_hidden_states=selected is not None)
        states = [out.last_hidden_state] if selected is None else [out.hidden_states[i] for i in selected]
        # Drop cls, view the time-major patch tokens as (batch, rows, frequency patches, dim), pool over frequency.
        pooled = [s[:, 1:].reshape(s.shape[0], window_rows, num_freq, -1).mean(dim=2) for s in states]
        rows_per_window.append(torch.stack(pooled, dim=2).float().cpu())  # (batch, rows, layers, dim)
    rows_per_window = torch.cat(rows_per_window)

    hop_rows = window_hop // patch
    results = []
    for (first, count, num_frames), num_rows in zip(clips, rows_per_clip):
        rows = torch.arange(num_rows)
        # The window whose centre (w * hop_rows + window_rows / 2) is nearest to the row centre (r + 0.5).
        window = torch.floor((rows + 0.5 - window_rows / 2) / hop_rows + 0.5).long().clamp(0, count - 1)
        embeddings = rows_per_window[first + window, rows - window * hop_rows]
        timestamps = frame_centre_seconds(rows.double() * patch + (patch - 1) / 2).float()
        results.append(FrameEmbeddings(embeddings[:, 0] if single else embeddings, timestamps, selected))
    return results


def mean_std_over_time(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std over dim 1 of `values` (batch, time, ...), counting only the time steps `mask`
    (batch, time) marks real."""
    weights = mask.float().reshape(*mask.shape, *[1] * (values.dim() - 2))
    mean = (values * weights).sum(1) / weights.sum(1)
    std = (((values - mean[:, None]) ** 2 * weights).sum(1) / weights.sum(1)).sqrt()
    return mean, std


@torch.no_grad()
def band_statistics(
    model: torch.nn.Module, input_values: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Clip features that keep the frequency bands apart: the mean and std over a clip's real time rows of each
    frequency band's tokens of the last block (cls left out), (clips, 2 * bands * hidden_size) float32 on the CPU.

    `pooler_output` averages the bands together; this is the pooling of the classic log-Mel statistics (mean and std
    of each bin over time) applied to the encoder's tokens. `input_values` (clips, frames, mel bins) and
    `attention_mask` (clips, frames) are the feature extractor's; the encoder sees the padding as in pretraining, and
    a time row counts as real when any of its frames is.
    """
    encoder = _base_encoder(model)
    batch_size = check_value("batch_size", batch_size, integer(minimum=1))
    if attention_mask.shape != input_values.shape[:2]:
        raise ValueError(f"`attention_mask` must be (clips, frames) = {tuple(input_values.shape[:2])} like "
                         f"`input_values`, got {tuple(attention_mask.shape)}.")
    encoder.eval()
    device = next(encoder.parameters()).device
    patch = encoder.config.patch_size
    features = []
    for start in range(0, len(input_values), batch_size):
        values, frames = input_values[start : start + batch_size], attention_mask[start : start + batch_size].bool()
        rows, bands = encoder.patch_grid(values.shape[1])
        tokens = encoder(values.to(device)).last_hidden_state[:, 1:].float().cpu()
        tokens = tokens.reshape(len(values), rows, bands, -1)  # time-major, see the module docstring
        # The model's own token mask (a row is real when any of its frames is), one entry per time row.
        real_rows = encoder._patch_mask(frames, rows * patch).reshape(len(values), rows, bands)[..., 0]
        features.append(torch.cat(mean_std_over_time(tokens, real_rows), 1).flatten(1))
    return torch.cat(features)


@torch.no_grad()
def classify_segments(
    model: torch.nn.Module,
    feature_extractor,
    audio,
    window_hop: int | None = None,
    batch_size: int = 16,
    sampling_rate: int | None = None,
    names: Sequence[str] | None = None,
) -> list[SegmentScores]:
    """Per-segment class scores of clips of any length: an event timeline.

    Each segment is one window of the feature extractor's `max_length` frames (the length the classifier was
    trained on), `window_hop` frames apart (default: half a window); scores are the sigmoid of the logits for
    multi-label models (`problem_type="multi_label_classification"`) and the softmax otherwise. Averaging a clip's
    segment logits gives what `audiomosaic classify` reports for the whole clip.

    Returns one [`SegmentScores`] per clip (`names`, if given, label them, e.g. with file paths).
    """
    if not is_a(model, "AudioMosaicForAudioClassification"):
        raise ValueError(f"Expected an AudioMosaicForAudioClassification, got {type(model).__name__}.")
    _check_extractor(feature_extractor)
    batch_size = check_value("batch_size", batch_size, integer(minimum=1))
    config = model.config
    max_length = feature_extractor.max_length
    if max_length > config.max_length:
        raise ValueError(
            f"The feature extractor's max_length ({max_length}) exceeds the model's ({config.max_length})."
        )
    window_hop = _check_window_hop(window_hop, max_length)
    device = next(model.parameters()).device
    values, _, clips = _windows(feature_extractor, audio, window_hop, sampling_rate, device)
    logits = torch.cat([model(values[start: start + batch_size]).logits.float().cpu()
                        for start in range(0, len(values), batch_size)])
    multi_label = config.problem_type == "multi_label_classification"
    scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    results = []
    for index, (first, count, num_frames) in enumerate(clips):
        start_frames = torch.arange(count, dtype=torch.float64) * window_hop
        last_frames = torch.clamp(start_frames + max_length - 1, max=num_frames - 1)
        starts = (start_frames * FRAME_SHIFT_MS / 1000).float()
        ends = ((last_frames * FRAME_SHIFT_MS + FRAME_LENGTH_MS) / 1000).float()
        name = names[index] if names is not None else f"clip {index}"
        results.append(SegmentScores(starts, ends, scores[first: first + count], labels, multi_label, name))
    return results


def timelines_to_csv(timelines: Sequence[SegmentScores], top_k: int = 3) -> str:
    """One CSV for several clips: file, start, end, label_1, score_1, ..., label_k, score_k."""
    if not timelines:
        raise ValueError("No timelines to write.")
    k = min(check_value("top_k", top_k, integer(minimum=1)), len(timelines[0].labels))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "start", "end", *[f"{kind}_{i}" for i in range(1, k + 1) for kind in ("label", "score")]])
    for timeline in timelines:
        for segment in timeline.top(k):
            writer.writerow([timeline.name, f"{segment['start']:.3f}", f"{segment['end']:.3f}",
                             *[value for p in segment["predictions"] for value in (p["label"], f"{p['score']:.6f}")]])
    return buffer.getvalue()


def timelines_to_table(timelines: Sequence[SegmentScores], top_k: int = 3) -> str:
    """A plain-text table: one block per clip, one line per segment with its top labels and scores."""
    lines = []
    for timeline in timelines:
        lines.append(f"{timeline.name}")
        for segment in timeline.top(top_k):
            labels = "  ".join(f"{p['label']} {p['score']:.3f}" for p in segment["predictions"])
            lines.append(f"  {segment['start']:8.2f} - {segment['end']:8.2f} s  {labels}")
    return "\n".join(lines)


def plot_timeline(
    timeline: SegmentScores,
    path: str | os.PathLike,
    top_k: int = 8,
    boundaries: Sequence[dict] | None = None,
    title: str | None = None,
) -> Path:
    """Draw a timeline as a heatmap (time x the `top_k` classes with the highest peak score) and save it as a PNG.

    `boundaries` (optional) are true segments `{"start", "end", "label"}` in seconds: their edges are drawn as
    vertical lines, their labels written on top, and the true class's row is outlined over each segment.
    Needs matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError as error:
        raise ImportError("Plotting a timeline needs matplotlib: pip install matplotlib.") from error

    classes = timeline.scores.max(dim=0).values.argsort(descending=True)[: min(top_k, len(timeline.labels))].tolist()
    centres = ((timeline.starts + timeline.ends) / 2).numpy()
    # Cell edges halfway between segment centres, so that every segment's cell is centred on its centre.
    edges = [float(timeline.starts[0])] if len(centres) else []
    edges += [(a + b) / 2 for a, b in zip(centres[:-1], centres[1:])] + [float(timeline.ends[-1])]
    width = min(24.0, max(8.0, 0.25 * float(timeline.ends[-1])))
    figure, axes = plt.subplots(figsize=(width, 1.2 + 0.45 * len(classes)))
    image = axes.pcolormesh(edges, range(len(classes) + 1), timeline.scores[:, classes].T.numpy(), cmap="magma",
                            vmin=0.0, vmax=1.0)
    axes.set_yticks([i + 0.5 for i in range(len(classes))], [timeline.labels[i] for i in classes])
    axes.invert_yaxis()
    axes.set_xlim(edges[0], edges[-1])
    axes.set_xlabel("time (s)")
    figure.colorbar(image, ax=axes, pad=0.01, label="sigmoid" if timeline.multi_label else "softmax")
    row_of = {timeline.labels[c]: row for row, c in enumerate(classes)}
    for segment in boundaries or []:
        axes.axvline(segment["start"], color="cyan", linewidth=0.8)
        axes.text((segment["start"] + segment["end"]) / 2, -0.15, str(segment["label"]), ha="center", va="bottom",
                  fontsize=7, rotation=90, clip_on=False)
        if segment["label"] in row_of:
            axes.add_patch(Rectangle((segment["start"], row_of[segment["label"]]), segment["end"] - segment["start"],
                                     1, fill=False, edgecolor="cyan", linewidth=1.2))
    if boundaries:
        axes.axvline(boundaries[-1]["end"], color="cyan", linewidth=0.8)
    axes.set_title(title or timeline.name, pad=40 if boundaries else 6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


__all__ = [
    "FrameEmbeddings",
    "SegmentScores",
    "band_statistics",
    "classify_segments",
    "frame_centre_seconds",
    "frame_embeddings",
    "mean_std_over_time",
    "plot_timeline",
    "timelines_to_csv",
    "timelines_to_table",
]
