"""Export an AudioMosaic encoder or classifier to ONNX with dynamic batch size and length.

    audiomosaic export-onnx runs/finetune onnx/ [--int8]

writes `onnx/model.onnx` (input `input_values` (batch, frames, 128) float32, any frames from 16 to the model's
`max_length`; outputs `logits` for a classifier, `last_hidden_state` and `pooler_output` for an encoder), the
feature extractor's `preprocessor_config.json` and the model's `config.json` (labels) beside it, and with `--int8`
also `model_int8.onnx` (onnxruntime dynamic quantisation: int8 weights of the MatMul/Gemm layers). The export uses
torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`) with symbolic batch and frame dimensions: a plain
trace would bake the traced length into the positional-embedding slice and the patch padding. Every export is checked
against PyTorch at several lengths before it is kept.

Run it with onnxruntime on features from this package's extractor:

    import onnxruntime, numpy as np
    from modeling_audiomosaic import AudioMosaicFeatureExtractor
    fe = AudioMosaicFeatureExtractor.from_pretrained("onnx/")
    session = onnxruntime.InferenceSession("onnx/model.onnx", providers=["CPUExecutionProvider"])
    features = fe(waveforms, sampling_rate=16000, return_tensors="np")["input_values"]
    logits = session.run(["logits"], {"input_values": features})[0]
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_audiomosaic import AudioMosaicConfig
from .feature_extraction_audiomosaic import AudioMosaicFeatureExtractor
from .modeling_audiomosaic import AudioMosaicForAudioClassification, AudioMosaicModel


# Tolerance of the post-export check against PyTorch (float32 on CPU; measured differences are ~1e-6).
PARITY_TOLERANCE = 1e-4


class _OnnxClassifier(nn.Module):
    def __init__(self, model: AudioMosaicForAudioClassification):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.model(_pad_to_patches(input_values, self.model.config.patch_size)).logits


class _OnnxEncoder(nn.Module):
    def __init__(self, model: AudioMosaicModel):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(_pad_to_patches(input_values, self.model.config.patch_size))
        return out.last_hidden_state, out.pooler_output


def _pad_to_patches(input_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    # The model pads only when the length is not a multiple of the patch size, a branch the exporter would fix at
    # the traced length; a pad by the symbolic remainder stays correct for every length.
    return F.pad(input_values, (0, 0, 0, (-input_values.shape[1]) % patch_size))


def load_for_export(
    model_dir: str | os.PathLike, task: str = "auto"
) -> AudioMosaicModel | AudioMosaicForAudioClassification:
    """The classifier (`task="classifier"`, or `"auto"` for a folder saved from one) or the encoder, in float32 eval
    mode with eager attention (the exporter then sees plain matmuls)."""
    if task not in ("auto", "classifier", "encoder"):
        raise ValueError(f"task must be 'auto', 'classifier' or 'encoder', got {task!r}.")
    if task == "auto":
        architectures = AudioMosaicConfig.from_pretrained(model_dir).architectures or []
        task = "classifier" if "AudioMosaicForAudioClassification" in architectures else "encoder"
    cls = AudioMosaicForAudioClassification if task == "classifier" else AudioMosaicModel
    return cls.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()


def export_onnx(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    task: str = "auto",
    opset: int = 18,
    int8: bool = False,
    check_lengths: tuple[int, ...] | None = None,
) -> dict:
    """Export `model_dir` to `output_dir/model.onnx` (+ `model_int8.onnx` with `int8`), write the feature extractor
    and config beside it, and check onnxruntime against PyTorch at `check_lengths` frames (default: 16, an odd
    length, half and all of `max_length`). Returns {"task", "files", "max_abs_error" per length}.

    Raises `ValueError` when the exported model differs from PyTorch by more than 1e-4 at any checked length.
    """
    import onnxruntime

    model = load_for_export(model_dir, task)
    task = "classifier" if isinstance(model, AudioMosaicForAudioClassification) else "encoder"
    config = model.config
    wrapper = (_OnnxClassifier if task == "classifier" else _OnnxEncoder)(model).eval()
    output_names = ["logits"] if task == "classifier" else ["last_hidden_state", "pooler_output"]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = output_dir / "model.onnx"

    batch = torch.export.Dim("batch", min=1, max=4096)
    frames = torch.export.Dim("frames", min=config.patch_size, max=config.max_length)
    example = torch.zeros(2, config.max_length, config.num_mel_bins)
    torch.onnx.export(
        wrapper, (example,), str(onnx_path), dynamo=True, opset_version=opset, input_names=["input_values"],
        output_names=output_names, dynamic_shapes={"input_values": {0: batch, 1: frames}}, external_data=False,
        verbose=False,
    )
    files = [onnx_path]
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8_path = output_dir / "model_int8.onnx"
        quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8)
        files.append(int8_path)

    try:
        feature_extractor = AudioMosaicFeatureExtractor.from_pretrained(model_dir)
    except OSError:
        feature_extractor = AudioMosaicFeatureExtractor(max_length=config.max_length)
    feature_extractor.save_pretrained(output_dir)
    config.save_pretrained(output_dir)
    files += [output_dir / "preprocessor_config.json", output_dir / "config.json"]

    if check_lengths is None:
        check_lengths = tuple(sorted({config.patch_size, config.patch_size * 3 + 5, config.max_length // 2,
                                      config.max_length}))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    errors = {}
    generator = torch.Generator().manual_seed(0)
    for length in check_lengths:
        features = torch.randn(3, length, config.num_mel_bins, generator=generator)
        with torch.no_grad():
            expected = wrapper(features)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(output_names, {"input_values": features.numpy()})
        errors[length] = max(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected))
    bad = {length: error for length, error in errors.items() if error > PARITY_TOLERANCE}
    if bad:
        raise ValueError(f"The ONNX export differs from PyTorch by more than {PARITY_TOLERANCE} at lengths {bad}.")
    return {"task": task, "files": [str(f) for f in files], "max_abs_error": errors}


__all__ = ["export_onnx", "load_for_export"]
