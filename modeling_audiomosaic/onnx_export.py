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

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .caching import atomic_folder
from .configuration_audiomosaic import AudioMosaicConfig
from .inputs import load_feature_extractor
from .modeling_audiomosaic import AudioMosaicForAudioClassification, AudioMosaicModel
from .validation import (
    ENCODER_KINDS,
    InvalidInput,
    check_value,
    folder_kind,
    integer,
    load_pretrained,
    output_folder,
    read_model_config,
)


logger = logging.getLogger(__name__)

# torch's dynamo exporter writes opset 18 or newer: it silently raises an older request to 18.
MINIMUM_OPSET = 18
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
    """The classifier (`task="classifier"`, which needs a classifier folder, or `"auto"` for a folder saved from one)
    or the encoder (of any AudioMosaic folder), in float32 eval mode with eager attention (the exporter then sees
    plain matmuls)."""
    if task not in ("auto", "classifier", "encoder"):
        raise ValueError(f"task must be 'auto', 'classifier' or 'encoder', got {task!r}.")
    try:
        config = read_model_config(str(model_dir), ("classifier",) if task == "classifier" else ENCODER_KINDS)
    except InvalidInput as error:
        if task != "classifier":
            raise
        raise InvalidInput(f"{error} (task 'classifier': without a trained head the export would be a random one)"
                           ) from None
    kind = folder_kind(config)
    cls = AudioMosaicForAudioClassification if kind == "classifier" and task != "encoder" else AudioMosaicModel
    return load_pretrained(cls, model_dir, (kind,), dtype=torch.float32, attn_implementation="eager").eval()


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
    import onnx

    opset = check_value("opset", opset, integer(minimum=MINIMUM_OPSET, maximum=onnx.defs.onnx_opset_version()))
    output_dir = Path(check_value("output_dir", output_dir, output_folder))
    if output_dir.resolve() == Path(model_dir).resolve():
        raise ValueError(f"{output_dir} is the model folder itself: the export's config.json would replace the model's; "
                         "choose another output folder.")
    # The feature extractor first: a bad preprocessor_config.json is found before the weights are loaded.
    max_length = AudioMosaicConfig.from_dict(read_model_config(str(model_dir), ENCODER_KINDS)).max_length
    feature_extractor = load_feature_extractor(str(model_dir), None, max_length)
    model = load_for_export(model_dir, task)
    task = "classifier" if isinstance(model, AudioMosaicForAudioClassification) else "encoder"
    config = model.config
    wrapper = (_OnnxClassifier if task == "classifier" else _OnnxEncoder)(model).eval()
    output_names = ["logits"] if task == "classifier" else ["last_hidden_state", "pooler_output"]
    if check_lengths is None:
        check_lengths = tuple(sorted({config.patch_size, config.patch_size * 3 + 5, config.max_length // 2,
                                      config.max_length}))
    check_lengths = check_value("check_lengths", list(check_lengths),
                                lambda lengths: [integer(config.patch_size, config.max_length)(n) for n in lengths])
    names = ["model.onnx", *(["model_int8.onnx"] if int8 else []), "preprocessor_config.json", "config.json"]

    # Everything is written to a temporary folder and moves into `output_dir` only once it passed the check.
    with atomic_folder(output_dir) as partial:
        onnx_path = partial / "model.onnx"
        batch = torch.export.Dim("batch", min=1, max=4096)
        frames = torch.export.Dim("frames", min=config.patch_size, max=config.max_length)
        example = torch.zeros(2, config.max_length, config.num_mel_bins)
        torch.onnx.export(
            wrapper, (example,), str(onnx_path), dynamo=True, opset_version=opset, input_names=["input_values"],
            output_names=output_names, dynamic_shapes={"input_values": {0: batch, 1: frames}}, external_data=False,
            verbose=False,
        )
        written = next(o.version for o in onnx.load(str(onnx_path), load_external_data=False).opset_import
                       if o.domain in ("", "ai.onnx"))
        if written != opset:
            raise ValueError(f"opset {opset} was requested but the exporter wrote opset {written}; nothing was "
                             "written.")
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(onnx_path), str(partial / "model_int8.onnx"), weight_type=QuantType.QInt8)
        feature_extractor.save_pretrained(partial)
        config.save_pretrained(partial)
        errors = _max_errors(wrapper, onnx_path, output_names, check_lengths)
        bad = {length: error for length, error in errors.items() if error > PARITY_TOLERANCE}
        if bad:
            raise ValueError(f"The ONNX export differs from PyTorch by more than {PARITY_TOLERANCE} at lengths {bad}; "
                             "nothing was written.")
    stale = output_dir / "model_int8.onnx"
    if not int8 and stale.is_file():
        # A quantised model of an earlier export beside this model.onnx would be taken for its int8 version.
        stale.unlink()
        logger.warning("Removed %s: it came from an earlier export (this one ran without int8).", stale)
    return {"task": task, "files": [str(output_dir / name) for name in names], "max_abs_error": errors}


def _max_errors(wrapper: nn.Module, onnx_path: Path, output_names: list[str], lengths: tuple[int, ...]
                ) -> dict[int, float]:
    """max |onnxruntime - PyTorch| over the outputs at each of `lengths` frames (seeded random features)."""
    import onnxruntime

    config = wrapper.model.config
    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime's own exception types; re-raised as one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"onnxruntime {onnxruntime.__version__} cannot load the export ({reason}); try another "
                         f"--opset (default {MINIMUM_OPSET}).") from None
    errors = {}
    generator = torch.Generator().manual_seed(0)
    for length in lengths:
        features = torch.randn(3, length, config.num_mel_bins, generator=generator)
        with torch.no_grad():
            expected = wrapper(features)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(output_names, {"input_values": features.numpy()})
        errors[length] = max(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected))
    return errors


__all__ = ["export_onnx", "load_for_export"]
