#!/usr/bin/env python
"""Contrastive pretraining of an AudioMosaic encoder (time-masked vs frequency-masked views, NT-Xent), with Accelerate.

    python training/pretrain.py --recipe training/recipes/pretrain_tiny_cpu.yaml \
        --dataset ../shared/data/speechcommands_test/meta.csv --audio_column filename --output_dir runs/tiny
    accelerate launch --multi_gpu --num_processes 8 training/pretrain.py \
        --recipe training/recipes/pretrain_audioset_vitb.yaml --dataset /data/audioset/train.csv --output_dir runs/vitb

Arguments are three dataclasses (`ModelArguments`, `DataArguments`, `PretrainingArguments`, transformers'
`HfArgumentParser` style; the data fields shared with fine-tuning and probing come from
`audiomosaic_training.arguments.AudioDataArguments`); `--recipe FILE.yaml` sets their defaults and the command line
overrides the recipe.

What a run does (official spec §3-§6 unless said otherwise):

* data: any source `audiomosaic_training.data.open_audio_dataset` opens (audiofolder folder, CSV/JSON/Parquet list
  of paths, `save_to_disk` folder, Hub id, `--streaming`), decoded with soundfile in DataLoader workers. Each clip is
  loaded once and made into two views, with `--augmentation_backend waveform` (the authors' pipeline) by
  `audiomosaic_training.augment.TwoViewTransform` in the workers (roll/magnitude, audiomentations chain, mean removal,
  Kaldi fbank, pad/truncate, normalise), with `spectral` by `audiomosaic_training.spectral_augment.
  SpectralTwoViewTransform` for a whole batch (in the worker that collates it on CPU, on the GPU when training there).
  Each sample's augmentation seed is derived from (seed, epoch, index), so the views do not depend on workers, on the
  batch or on where a run was resumed. An unreadable clip is logged and replaced by the next
  index (map-style) or dropped (streaming); failures are counted in the logs and a run whose clips keep failing stops.
* batches: a seeded permutation per epoch; every global batch of `per_device_train_batch_size x processes` clips is
  split contiguously over the processes; the last incomplete batch is dropped (`drop_last`).
* loss: `AudioMosaicForPreTraining` computes NT-Xent with negatives all-gathered from every process with gradients;
  with DDP's gradient averaging this is the gradient of the global-batch loss. Projector BatchNorms become
  SyncBatchNorm on multi-GPU runs. Seeds are offset by rank after the (rank-independent) model initialisation.
* optimisation: AdamW, no weight decay for 1-D parameters, `cls_token` and `position_embeddings`
  (`audiomosaic_training.optim`); linear warm-up then half-cycle cosine to `min_lr` (transformers'
  `cosine_with_min_lr` schedule, stepped every step, saved with the checkpoint); optional bf16 autocast; gradient
  checkpointing of the first `gradient_checkpointing_fraction` of the blocks. A step whose loss (or gradient) is not
  finite on any process is skipped on all of them and counted; `max_consecutive_nonfinite` in a row stop the run.
* checkpoints: `output_dir/checkpoints/step_XXXXXXXX/` holds the Accelerate state (`state/`: model, optimizer, RNG of
  every process, the schedule), `pretrain_state.json` (step, epoch, position in the epoch, counters: a
  `PretrainState`) and the exported encoder
  (`config.json`, `model.safetensors`, `preprocessor_config.json`, so the folder loads with `AutoModel`). Written to a
  temporary folder and renamed, so a killed run never leaves a half-written checkpoint; the last `save_total_limit`
  are kept. Re-running the same command resumes from the newest one (`--resume auto`, the default).
* logging: tqdm bar (loss, contrastive accuracy, learning rate, samples/s), `output_dir/log.jsonl`, Accelerate
  trackers (`--report_to tensorboard`, ...), and every `effective_rank_steps` the effective rank (exp of the entropy
  of the normalised singular values) of the pooled features of a fixed, un-augmented probe batch.
"""

import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from accelerate import Accelerator
from accelerate.utils import TorchDynamoPlugin, set_seed
from datasets import Dataset, IterableDataset

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicForPreTraining
from modeling_audiomosaic.analysis import effective_rank  # RankMe: exp(entropy of normalised singular values)
from modeling_audiomosaic.norm_stats import AUTO_PRESET
from modeling_audiomosaic.validation import corrupt_file

from .arguments import AudioDataArguments, parse_args_with_recipe
from .augment import AUGMENTATIONS, TwoViewTransform, recipe_transforms
from .data import open_train_split
from .logger import setup_logging
from .memory import checkpoint_blocks, checkpointed_blocks_for_memory
from .models import build_config, build_feature_extractor, parse_config_overrides
from .optim import build_optimizer, warmup_cosine_schedule
from .spectral_augment import SpectralTwoViewTransform
from .two_view_data import (
    AUGMENTATION_BACKENDS,
    DeviceBatches,
    RunBatchSampler,
    SpectralViews,
    StreamBatches,
    TwoViewDataset,
    WaveformViews,
    map_style_loader,
    probe_features,
)


logger = logging.getLogger("audiomosaic.pretrain")

CHECKPOINT_PREFIX = "step_"
TMP_PREFIX = ".tmp_"
STATE_FILE = "pretrain_state.json"  # not Trainer's trainer_state.json: a different format


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """The encoder and its pretraining head; unset fields keep `AudioMosaicConfig`'s defaults (the released ViT-B)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from a saved AudioMosaicForPreTraining / AudioMosaicModel folder."}
    )
    config_name: str | None = field(default=None, metadata={"help": "config.json (or its folder) to start from."})
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    drop_path_rate: float | None = None
    projection_hidden_size: int | None = None
    projection_dim: int | None = None
    projector_norm: str | None = field(default=None, metadata={"help": "batch_norm (authors') or none."})
    temperature: float | None = None
    contrastive_negatives: str | None = field(default=None, metadata={"help": "all (released) or cross_view (Eq. 4)."})
    pretraining_masking: str | None = field(
        default=None, metadata={"help": "official, paper, time, frequency, unstructured or none."}
    )
    mask_ratio_time: float | None = None
    mask_ratio_freq: float | None = None
    position_embedding_init: str | None = None
    config_overrides: str | None = field(
        default=None, metadata={"help": "Other config fields as `key=value,key=value` (e.g. qkv_bias=false)."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, flash_attention_2, ..."})
    gradient_checkpointing_fraction: float = field(
        default=0.0, metadata={"help": "Recompute the activations of the first fraction of the blocks (0.7 released)."}
    )
    gradient_checkpointing_memory_gib: float | None = field(
        default=None,
        metadata={"help": "Instead of a fraction: checkpoint the fewest blocks whose estimated peak memory per device "
                          "fits this many GiB (estimated on CPU before training; README, Pretraining memory)."},
    )
    sync_batchnorm: bool = field(
        default=True, metadata={"help": "Convert the projector BatchNorms to SyncBatchNorm on multi-GPU runs."}
    )

    def __post_init__(self):
        if not 0.0 <= self.gradient_checkpointing_fraction <= 1.0:
            raise ValueError(
                f"--gradient_checkpointing_fraction must be in [0, 1], got {self.gradient_checkpointing_fraction}."
            )
        if self.gradient_checkpointing_memory_gib is not None and self.gradient_checkpointing_memory_gib <= 0:
            raise ValueError("--gradient_checkpointing_memory_gib must be a positive number of GiB, got "
                             f"{self.gradient_checkpointing_memory_gib}.")


@dataclass
class DataArguments(AudioDataArguments):
    """Unlabelled audio for pretraining: the shared `AudioDataArguments` (the released recipe's AudioSet statistics and
    roll/magnitude by default) plus streaming and the two-view augmentation."""

    feature_extractor_preset: str | None = field(
        default="audioset",
        metadata={"help": "normalisation statistics: audioset | esc50 | speechcommands, or `auto`: those of the "
                          "training data (cached in ~/.cache/audiomosaic/norm_stats)"},
    )
    roll_magnitude: bool = field(default=True, metadata={"help": "Roll + Beta(10,10)+0.5 gain before augmentation."})
    streaming: bool = field(default=False, metadata={"help": "Iterate the source lazily (corpora beyond the disk)."})
    shuffle_buffer_size: int = field(default=10000, metadata={"help": "Shuffle buffer of a streamed source."})
    augmentation: str = field(
        default="official",
        metadata={"help": f"Augmentation recipe: one of {AUGMENTATIONS}, optionally minus transforms for ablations "
                          "(official-pitch: official without PitchShift)."},
    )
    augmentation_backend: str = field(
        default="waveform",
        metadata={"help": "waveform: audiomentations on each clip in the DataLoader workers (the authors' pipeline); "
                          "spectral: the same recipe on the power spectrum of a whole batch (in the workers on CPU, "
                          "on the GPU when training there), ~10x cheaper; see docs/pretraining.md, Spectral-domain augmentation."},
    )
    time_stretch_max_rate: float | None = field(
        default=None, metadata={"help": "TimeStretch max rate (official 1.3, paper Table 8: 1.25)."}
    )
    stretch_method: str | None = field(
        default=None, metadata={"help": "audiomentations TimeStretch/PitchShift method (library default if unset)."}
    )
    max_load_retries: int = field(
        default=10, metadata={"help": "Unreadable clips in a row (each replaced by the next index) before giving up."}
    )
    probe_size: int = field(default=256, metadata={"help": "Clips in the fixed effective-rank probe batch."})

    def __post_init__(self):
        super().__post_init__()
        try:
            recipe_transforms(self.augmentation)
        except ValueError as error:
            raise ValueError(f"--augmentation: {error}") from None
        if self.augmentation_backend not in AUGMENTATION_BACKENDS:
            raise ValueError(f"--augmentation_backend must be one of {AUGMENTATION_BACKENDS}, got "
                             f"{self.augmentation_backend!r}.")
        if self.augmentation_backend == "spectral" and self.stretch_method is not None:
            raise ValueError("--stretch_method chooses audiomentations' algorithm: it applies to "
                             "--augmentation_backend waveform only.")
        if self.feature_extractor_preset == AUTO_PRESET and self.streaming:
            raise ValueError(
                "--feature_extractor_preset auto needs the whole training split; it cannot be used with --streaming "
                "(compute the statistics with `audiomosaic norm-stats` and pass --norm_mean/--norm_std).")
        if self.max_load_retries < 1:
            raise ValueError(f"--max_load_retries must be at least 1, got {self.max_load_retries}.")


@dataclass
class PretrainingArguments:
    output_dir: str = field(metadata={"help": "Checkpoints, logs and the final encoder go here."})
    per_device_train_batch_size: int = 64
    learning_rate: float = 6e-4
    min_lr: float = field(default=1e-6, metadata={"help": "Final learning rate of the cosine schedule."})
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping (0 = none, as released)."})
    num_train_epochs: float = 400.0
    max_steps: int = field(default=-1, metadata={"help": "Total optimizer steps; overrides num_train_epochs if > 0."})
    warmup_epochs: float = 1.0
    warmup_steps: int | None = field(default=None, metadata={"help": "Overrides warmup_epochs (needed to stream)."})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 (released) or fp16."})
    seed: int = 7
    dataloader_num_workers: int = 2
    save_steps: int = field(
        default=1000, metadata={"help": "Write a resumable checkpoint every N steps (0 = only at the end)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Keep the newest K checkpoints."})
    export_steps: int = field(
        default=0, metadata={"help": "Also export the encoder to output_dir/encoder_step_N every N steps (kept)."}
    )
    resume: str = field(
        default="auto",
        metadata={"help": "auto: continue from the newest checkpoint in output_dir if any; no: start over (refused "
                  "if checkpoints exist, unless --overwrite_output_dir); or a checkpoint folder."},
    )
    overwrite_output_dir: bool = False
    force_resume: bool = field(
        default=False,
        metadata={"help": "Resume a checkpoint even if what defines its run (data, model, batch, schedule) differs "
                          "from this command's; without it such a resume is refused, naming the difference."},
    )
    logging_steps: int = 10
    effective_rank_steps: int = field(default=100, metadata={"help": "Effective rank of the probe batch every N steps"})
    report_to: list[str] = field(
        default_factory=lambda: ["none"], metadata={"help": "Accelerate trackers: none, all, tensorboard, wandb, ..."}
    )
    run_name: str = "audiomosaic_pretrain"
    max_consecutive_nonfinite: int = field(
        default=10, metadata={"help": "Stop after this many steps in a row with a non-finite loss or gradient."}
    )
    use_cpu: bool = False
    torch_threads: int | None = field(
        default=None, metadata={"help": "torch.set_num_threads in the main process (on CPU, default: the cores left "
                                        "after one per DataLoader worker with waveform augmentation, all of them "
                                        "with spectral)."}
    )
    disable_tqdm: bool = False
    torch_compile: bool = field(
        default=False, metadata={"help": "torch.compile the model (inductor), as the authors do; the first steps "
                                         "compile."})
    activation_memory_budget: float | None = field(
        default=None,
        metadata={"help": "With --torch_compile: the fraction (0, 1] of the compiled step's activation memory to keep; "
                          "the compiler recomputes the cheapest rest in backward."},
    )
    synchronize_step_times: bool = field(
        default=False, metadata={"help": "Wait for CUDA at each step phase so the logged data-wait / forward / "
                                         "backward / optimizer seconds are exact (a little slower)."}
    )

    def __post_init__(self):
        if isinstance(self.report_to, str):  # a recipe's `report_to: tensorboard`, as TrainingArguments accepts
            self.report_to = [self.report_to]
        self.report_to = [name for name in self.report_to if name != "none"]
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"--mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}.")
        for name in ("logging_steps", "max_consecutive_nonfinite", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.activation_memory_budget is not None and not (
                self.torch_compile and 0.0 < self.activation_memory_budget <= 1.0):
            raise ValueError("--activation_memory_budget needs --torch_compile and a value in (0, 1], got "
                             f"{self.activation_memory_budget} (torch_compile={self.torch_compile}).")
        if self.per_device_train_batch_size < 2:
            raise ValueError("--per_device_train_batch_size must be at least 2 (the projector BatchNorm and NT-Xent), "
                             f"got {self.per_device_train_batch_size}.")


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, PretrainingArguments]:
    return parse_args_with_recipe((ModelArguments, DataArguments, PretrainingArguments), argv,
                                  prog="audiomosaic pretrain")


def check_args(data_args: DataArguments, args: PretrainingArguments) -> None:
    """What no single argument group can check on its own."""
    if data_args.streaming and args.max_steps <= 0:
        raise ValueError("A streamed dataset has no known length: set --max_steps (and --warmup_steps).")


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


def build_pretraining_config(model_args: ModelArguments, max_length: int | None = None) -> AudioMosaicConfig:
    """`AudioMosaicConfig` from `--model_name_or_path` / `--config_name` / defaults, with the set fields, the
    `--config_overrides` and `max_length` (frames per clip) applied."""
    overrides = {
        f.name: getattr(model_args, f.name)
        for f in dataclasses.fields(ModelArguments)
        if f.name in AudioMosaicConfig.__dataclass_fields__ and getattr(model_args, f.name) is not None
    }
    overrides.update(parse_config_overrides(model_args.config_overrides))
    if max_length is not None:
        overrides["max_length"] = max_length
    return build_config(model_args.config_name or model_args.model_name_or_path, overrides)


def build_model(model_args: ModelArguments, config: AudioMosaicConfig | None = None) -> AudioMosaicForPreTraining:
    config = config or build_pretraining_config(model_args)
    kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if model_args.model_name_or_path:
        # An encoder-only folder loads too: the projector is then newly initialised.
        return AudioMosaicForPreTraining.from_pretrained(model_args.model_name_or_path, config=config, **kwargs)
    model = AudioMosaicForPreTraining(config)
    if kwargs:
        model.set_attn_implementation(kwargs["attn_implementation"])
    return model


def configure_gradient_checkpointing(model: AudioMosaicForPreTraining, fraction: float) -> list[bool]:
    """Recompute the activations of the first `int(num_layers * fraction)` blocks in backward (the authors'
    `checkpointing_fraction`, 0.7 in the released recipe); returns the per-block flags."""
    return checkpoint_blocks(model, int(len(model.audiomosaic.layers) * fraction))


def configure_memory(model: AudioMosaicForPreTraining, model_args: ModelArguments, args: PretrainingArguments,
                     ) -> list[bool]:
    """Gradient checkpointing from `--gradient_checkpointing_memory_gib` (the fewest blocks that fit, estimated) or
    else `--gradient_checkpointing_fraction`; returns the per-block flags."""
    if model_args.gradient_checkpointing_memory_gib is None:
        return configure_gradient_checkpointing(model, model_args.gradient_checkpointing_fraction)
    blocks, estimate = checkpointed_blocks_for_memory(model.config, args.per_device_train_batch_size,
                                                      model_args.gradient_checkpointing_memory_gib,
                                                      args.mixed_precision)
    logger.info("--gradient_checkpointing_memory_gib %g: checkpointing %d of %d blocks, estimated peak %.2f GiB per "
                "device.", model_args.gradient_checkpointing_memory_gib, blocks, len(model.audiomosaic.layers),
                estimate)
    return checkpoint_blocks(model, blocks)


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def build_views(data_args: DataArguments, feature_extractor: AudioMosaicFeatureExtractor,
                device: torch.device) -> WaveformViews | SpectralViews:
    """How the run makes its two views (`--augmentation_backend`)."""
    if data_args.augmentation_backend == "spectral":
        transform = SpectralTwoViewTransform(feature_extractor, data_args.augmentation, data_args.roll_magnitude,
                                             data_args.time_stretch_max_rate)
        return SpectralViews(transform, device)
    return WaveformViews(TwoViewTransform(feature_extractor, data_args.augmentation, data_args.roll_magnitude,
                                          data_args.time_stretch_max_rate, data_args.stretch_method))


# ----------------------------------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------------------------------


class StepTimer:
    """Wall time of each phase of the training steps (data wait, forward, backward, optimizer), summed until read.
    With `synchronize`, CUDA work is waited for at every mark so that it is charged to the phase that queued it."""

    PHASES = ("data_wait", "forward", "backward", "optimizer")

    def __init__(self, device: torch.device, synchronize: bool = False):
        self.synchronize = synchronize and device.type == "cuda"
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.last = time.perf_counter()

    def start(self) -> None:
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        if self.synchronize:
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now


class StepResult(TypedDict):
    loss: float  # global-batch mean
    contrastive_accuracy: float
    applied: bool  # the update was applied: loss and gradient finite on every process
    grad_norm: float


def compute_gradients(accelerator: Accelerator, model: AudioMosaicForPreTraining, batch: dict,
                      timer: StepTimer | None = None) -> dict:
    """Forward both views, and backward unless the loss is non-finite on some process. Returns the global-batch mean
    loss and contrastive accuracy (as floats) and whether the step is usable (`finite`, the same on every process)."""
    with accelerator.autocast():
        output = model(input_values=batch["input_values"], input_values_view1=batch["input_values_view1"])
    if timer is not None:
        timer.mark("forward")
    loss = output.loss
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:
        finite = accelerator.gather(finite).min().reshape(1)
    finite = bool(finite.item())
    if finite:
        accelerator.backward(loss)
    if timer is not None:
        timer.mark("backward")
    stats = torch.stack([loss.detach().float(), output.contrastive_accuracy.detach().float()])
    stats = accelerator.reduce(stats, "mean") if accelerator.num_processes > 1 else stats
    return {"loss": float(stats[0]), "contrastive_accuracy": float(stats[1]), "finite": finite}


def apply_update(accelerator: Accelerator, model: AudioMosaicForPreTraining, optimizer: torch.optim.Optimizer,
                 max_grad_norm: float = 0.0) -> tuple[float, bool]:
    """Check the (already averaged) gradients, step and clear. Returns the gradient norm and whether the update was
    applied (a non-finite gradient skips it, identically on every process)."""
    parameters = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(parameters, max_grad_norm)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float())
                                                          for p in parameters]))
    grad_norm = float(grad_norm)
    applied = math.isfinite(grad_norm)
    if applied:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, applied


def training_step(accelerator: Accelerator, model: AudioMosaicForPreTraining, optimizer: torch.optim.Optimizer,
                  batch: dict, max_grad_norm: float = 0.0, timer: StepTimer | None = None) -> StepResult:
    """One optimizer step on `batch` at the optimizer's current learning rate (the schedule is stepped by the
    caller, applied or not, so that it follows the global step)."""
    result = compute_gradients(accelerator, model, batch, timer)
    grad_norm, applied = float("nan"), False
    if result["finite"]:
        grad_norm, applied = apply_update(accelerator, model, optimizer, max_grad_norm)
    else:
        optimizer.zero_grad(set_to_none=True)
    if timer is not None:
        timer.mark("optimizer")
    return StepResult(loss=result["loss"], contrastive_accuracy=result["contrastive_accuracy"], applied=applied,
                      grad_norm=grad_norm)


@torch.no_grad()
def probe_effective_rank(accelerator: Accelerator, model: AudioMosaicForPreTraining, probe: torch.Tensor,
                         batch_size: int = 64) -> dict:
    """Effective rank of the encoder's pooled features (`pooler_output`) and of the projections on the probe batch
    (eval mode: no masking, BatchNorm running statistics)."""
    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    pooled, projected = [], []
    for start in range(0, probe.shape[0], batch_size):
        with accelerator.autocast():
            view = unwrapped.forward_view(probe[start : start + batch_size].to(accelerator.device), 0)
        pooled.append(view.pooler_output.float().cpu())
        projected.append(view.projection.float().cpu())
    unwrapped.train(was_training)
    return {"effective_rank": effective_rank(torch.cat(pooled)),
            "effective_rank_projection": effective_rank(torch.cat(projected))}


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class PretrainState:
    """Where a run is, saved as `pretrain_state.json` in every checkpoint and in the output folder at the end."""

    total_steps: int
    steps_per_epoch: int | None  # None for a streamed source
    world_size: int
    per_device_train_batch_size: int
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    stream_consumed: int = 0  # examples of the current epoch a streamed source has used or failed
    samples_seen: int = 0
    failed_loads: int = 0
    failed_files: list[str] = field(default_factory=list)  # the first 1000 unreadable clips
    nonfinite_steps: int = 0
    consecutive_nonfinite: int = 0
    run: dict = field(default_factory=dict)  # what defines the run (`run_definition`)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    def resume_from(self, path: Path, force: bool = False) -> None:
        """Take the position and counters of the state saved at `path`. The layout must be the same, and so must the
        run's definition unless `force` (then the differences are logged)."""
        try:
            saved = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise corrupt_file(path, "pretraining state", error) from None
        if (saved.get("world_size"), saved.get("per_device_train_batch_size")) != (
                self.world_size, self.per_device_train_batch_size):
            raise ValueError(
                f"{path.parent} was written by {saved.get('world_size')} process(es) x "
                f"{saved.get('per_device_train_batch_size')} clips; resuming needs the same layout to continue exactly."
            )
        changes = run_differences(saved.get("run") or {}, self.run)
        if changes and not force:
            raise ValueError(
                f"{path.parent} belongs to another run ({'; '.join(changes)}): start over with --overwrite_output_dir "
                "(or another --output_dir), or continue it anyway with --force_resume."
            )
        if changes:
            logger.warning("--force_resume: continuing %s although its run differs: %s.", path.parent,
                           "; ".join(changes))
        for key in ("global_step", "epoch", "step_in_epoch", "stream_consumed", "samples_seen", "failed_loads",
                    "failed_files", "nonfinite_steps", "consecutive_nonfinite"):
            setattr(self, key, saved[key])


def run_definition(config: AudioMosaicConfig, data_args: DataArguments, args: PretrainingArguments,
                   clips: int | None, total_steps: int, warmup_steps: int) -> dict:
    """What makes a checkpoint's run the same run as this command's: the data (source, selection, clip count,
    preprocessing, augmentation), the model config, the batch and the schedule. Options that do not change the
    result (logging, checkpointing, workers, threads) are left out, so that they can change on resume."""
    dataset = data_args.dataset
    if dataset and Path(dataset).exists():
        dataset = str(Path(dataset).resolve())
    model = {key: value for key, value in config.to_diff_dict().items() if key != "transformers_version"}
    data = {key: getattr(data_args, key) for key in (
        "dataset_config_name", "train_split", "audio_column", "fold_column", "train_folds", "max_train_samples",
        "sampling_rate", "feature_extractor_preset", "norm_mean", "norm_std", "roll_magnitude", "streaming",
        "augmentation", "augmentation_backend", "time_stretch_max_rate", "stretch_method")}
    schedule = {key: getattr(args, key) for key in (
        "per_device_train_batch_size", "learning_rate", "min_lr", "weight_decay", "adam_beta1", "adam_beta2",
        "adam_epsilon", "max_grad_norm", "seed", "mixed_precision")}
    # JSON round trip: the saved definition is compared with this one, so both must have JSON's types.
    return json.loads(json.dumps({"dataset": dataset, "clips": clips, **data, "total_steps": total_steps,
                                  "warmup_steps": warmup_steps, **schedule, "model": model}, default=str))


def run_differences(saved: dict, current: dict) -> list[str]:
    """`key: saved -> current` for every field of two run definitions that differs (model fields as `model.key`);
    empty when the saved state predates run definitions."""
    if not saved:
        return []
    flat = [{}, {}]
    for target, definition in zip(flat, (saved, current)):
        for key, value in definition.items():
            if isinstance(value, dict):
                target.update({f"{key}.{inner}": item for inner, item in value.items()})
            else:
                target[key] = value
    return [f"{key}: {flat[0].get(key)} -> {flat[1].get(key)}" for key in sorted(set(flat[0]) | set(flat[1]))
            if flat[0].get(key) != flat[1].get(key)]


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (renamed into place), oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and (p / STATE_FILE).is_file() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def export_encoder(accelerator: Accelerator, model: AudioMosaicForPreTraining,
                   feature_extractor: AudioMosaicFeatureExtractor, directory: Path) -> None:
    """`save_pretrained` of the encoder (config with `auto_map`, safetensors) and of the feature extractor."""
    encoder = accelerator.unwrap_model(model).audiomosaic
    encoder.save_pretrained(directory, safe_serialization=True)
    feature_extractor.save_pretrained(directory)


def save_checkpoint(accelerator: Accelerator, model: AudioMosaicForPreTraining,
                    feature_extractor: AudioMosaicFeatureExtractor, output_dir: str, state: PretrainState,
                    keep: int) -> Path:
    """Write checkpoint `step_N` atomically (temporary folder, then rename) and keep the newest `keep`."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"{CHECKPOINT_PREFIX}{state.global_step:08d}"
    tmp = root / f"{TMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    if accelerator.is_main_process:
        export_encoder(accelerator, model, feature_extractor, tmp)
        state.write(tmp / STATE_FILE)
        if final.exists():  # the same step saved by an earlier, interrupted attempt
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, state: PretrainState, log_path: Path,
                    force: bool = False) -> None:
    """Restore model, optimizer, schedule and RNGs from `checkpoint`, its position into `state` (refused for another
    run unless `force`), and drop the log lines of steps after it (the killed run's, which the resumed run redoes)."""
    state.resume_from(checkpoint / STATE_FILE, force)
    accelerator.load_state(str(checkpoint / "state"))
    logger.info("Resumed from %s at step %d (epoch %d, batch %d of the epoch).", checkpoint, state.global_step,
                state.epoch, state.step_in_epoch)
    if accelerator.is_main_process and log_path.is_file():
        kept = [line for line in log_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= state.global_step]
        log_path.write_text("".join(line + "\n" for line in kept))


def resolve_resume(args: PretrainingArguments) -> Path | None:
    checkpoints = list_checkpoints(args.output_dir)
    if args.resume in ("auto", "latest"):
        if args.resume == "latest" and not checkpoints:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {args.output_dir}/checkpoints.")
        return checkpoints[-1] if checkpoints and not args.overwrite_output_dir else None
    if args.resume in ("no", "none", "never", "false"):
        if checkpoints and not args.overwrite_output_dir:
            raise FileExistsError(
                f"{args.output_dir} already holds checkpoints ({checkpoints[-1].name}); resume with --resume auto, "
                "or start over with --overwrite_output_dir."
            )
        return None
    path = Path(args.resume)
    if not (path / STATE_FILE).is_file() or not (path / "state").is_dir():
        raise FileNotFoundError(f"--resume {args.resume}: not a checkpoint folder ({STATE_FILE} and state/).")
    return path


def start_fresh(args: PretrainingArguments) -> None:
    """Nothing of an earlier run in `output_dir` may mix into a new one."""
    output_dir = Path(args.output_dir)
    if args.overwrite_output_dir:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
        for export in output_dir.glob("encoder_step_*"):
            shutil.rmtree(export, ignore_errors=True)
    (output_dir / "log.jsonl").unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The run's clips and how they become batches of two views on the training device."""

    feature_extractor: AudioMosaicFeatureExtractor
    views: WaveformViews | SpectralViews
    source: Dataset | IterableDataset
    dataset: TwoViewDataset | None  # map-style sources
    stream: StreamBatches | None  # streamed sources
    steps_per_epoch: int | None
    run_batches: DeviceBatches | None = None  # map-style: the one loader of the whole run, once started

    def epoch(self, state: PretrainState, args: PretrainingArguments, accelerator: Accelerator) -> Iterator[dict]:
        """The model's inputs, on the device, for the rest of `state.epoch` from `state`'s position on."""
        device = accelerator.device
        if self.stream is not None:
            return DeviceBatches(self.stream.iterate(state.epoch, state.stream_consumed), self.views, device)
        if self.run_batches is None:
            sampler = RunBatchSampler(len(self.dataset), args.seed, args.per_device_train_batch_size,
                                      accelerator.num_processes, accelerator.process_index, state.epoch,
                                      state.step_in_epoch, state.total_steps - state.global_step)
            loader = map_style_loader(self.dataset, sampler, args.dataloader_num_workers,
                                      pin_memory=device.type == "cuda")
            self.run_batches = DeviceBatches(iter(loader), self.views, device)
        return itertools.islice(self.run_batches, self.steps_per_epoch - state.step_in_epoch)


def build_training_data(accelerator: Accelerator, data_args: DataArguments, args: PretrainingArguments,
                        config: AudioMosaicConfig) -> TrainingData:
    with accelerator.main_process_first():
        source = open_train_split(data_args, args.seed, streaming=data_args.streaming)
        feature_extractor = build_feature_extractor(
            data_args, max_length=config.max_length,
            train_audio=source["audio"] if data_args.feature_extractor_preset == AUTO_PRESET else None)
    views = build_views(data_args, feature_extractor, accelerator.device)
    sampling_rate = feature_extractor.sampling_rate
    if isinstance(source, IterableDataset):
        from datasets.distributed import split_dataset_by_node

        stream = StreamBatches(
            split_dataset_by_node(source, accelerator.process_index, accelerator.num_processes), views,
            sampling_rate, args.seed, args.per_device_train_batch_size, args.dataloader_num_workers,
            data_args.shuffle_buffer_size, data_args.max_load_retries,
        )
        return TrainingData(feature_extractor, views, source, None, stream, None)
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    if len(source) < global_batch:
        raise ValueError(
            f"{data_args.dataset} has {len(source)} clips, fewer than one global batch ({global_batch} = "
            f"{args.per_device_train_batch_size} per process x {accelerator.num_processes}); with drop_last no "
            "step could run. Lower --per_device_train_batch_size."
        )
    dataset = TwoViewDataset(source, views, sampling_rate, args.seed, data_args.max_load_retries)
    return TrainingData(feature_extractor, views, source, dataset, None, len(dataset) // global_batch)


def schedule_lengths(args: PretrainingArguments, steps_per_epoch: int | None) -> tuple[int, int]:
    """(total steps, warm-up steps) from steps or epochs."""
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    if args.warmup_steps is not None:
        warmup_steps = args.warmup_steps
    elif steps_per_epoch is not None:
        warmup_steps = int(round(args.warmup_epochs * steps_per_epoch))
    else:
        raise ValueError("Set --warmup_steps for a streamed dataset.")
    return total_steps, min(warmup_steps, total_steps)


class MetricsWindow:
    """Loss, contrastive accuracy, throughput and where the time went over the steps since the last log line."""

    def __init__(self, timer: StepTimer):
        self.timer = timer
        self.reset()

    def reset(self) -> None:
        self.losses, self.accuracies, self.steps, self.start = [], [], 0, time.perf_counter()
        self.timer.reset()

    def add(self, result: StepResult) -> None:
        self.steps += 1
        if result["applied"]:
            self.losses.append(result["loss"])
            self.accuracies.append(result["contrastive_accuracy"])

    def samples_per_second(self, global_batch: int) -> float:
        return self.steps * global_batch / max(time.perf_counter() - self.start, 1e-9)

    def summary(self, global_batch: int) -> dict:
        seconds_per_step = {f"{phase}_seconds": total / max(self.steps, 1)
                            for phase, total in self.timer.seconds.items()}
        return {"loss": float(np.mean(self.losses)) if self.losses else float("nan"),
                "contrastive_accuracy": float(np.mean(self.accuracies)) if self.accuracies else float("nan"),
                "samples_per_second": self.samples_per_second(global_batch), **seconds_per_step}


@dataclass
class PretrainRun:
    """What one epoch of training works with."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data: TrainingData
    args: PretrainingArguments
    state: PretrainState
    probe: torch.Tensor | None
    log_path: Path
    progress: object | None = None  # tqdm bar on the main process
    window: MetricsWindow | None = None

    def __post_init__(self):
        if self.window is None:
            self.window = MetricsWindow(StepTimer(self.accelerator.device, self.args.synchronize_step_times))

    @property
    def global_batch(self) -> int:
        return self.args.per_device_train_batch_size * self.accelerator.num_processes

    def log(self, entry: dict) -> None:
        if self.accelerator.is_main_process:
            with self.log_path.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
            if self.progress is None:
                logger.info(json.dumps(entry))
        if self.args.report_to:
            self.accelerator.log({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])

    def record_failures(self, failures: list[dict]) -> None:
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            failures = gather_object(failures)
        for failure in failures:
            if self.accelerator.is_main_process:
                logger.warning("Skipped unreadable clip %s (%s)", failure["name"], failure["error"])
            self.state.failed_loads += 1
            if failure["name"] not in self.state.failed_files and len(self.state.failed_files) < 1000:
                self.state.failed_files.append(failure["name"])

    def count_step(self, result: StepResult) -> None:
        state = self.state
        state.global_step += 1
        state.step_in_epoch += 1
        state.samples_seen += self.global_batch
        if self.data.stream is not None:
            state.stream_consumed = self.data.stream.consumed
        self.window.add(result)
        if result["applied"]:
            state.consecutive_nonfinite = 0
            return
        state.nonfinite_steps += 1
        state.consecutive_nonfinite += 1
        logger.warning("Step %d skipped: non-finite loss or gradient (loss %s, %d in a row, %d in all).",
                       state.global_step, result["loss"], state.consecutive_nonfinite, state.nonfinite_steps)
        if state.consecutive_nonfinite >= self.args.max_consecutive_nonfinite:
            raise RuntimeError(
                f"Stopping: {state.consecutive_nonfinite} steps in a row (up to step {state.global_step}) had a "
                "non-finite loss or gradient. Lower --learning_rate, use --mixed_precision no, or check the data; the "
                f"last checkpoint in {self.args.output_dir}/checkpoints is from before the problem."
            )

    def after_step(self, result: StepResult, lr: float) -> None:
        """Progress bar, log line, effective rank, checkpoint and export due after this step."""
        args, state, step = self.args, self.state, self.state.global_step
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{result['loss']:.4f}", acc=f"{result['contrastive_accuracy']:.3f}",
                                      lr=f"{lr:.2e}", sps=f"{self.window.samples_per_second(self.global_batch):.1f}")
        entry = {}
        if step % args.logging_steps == 0 or step == state.total_steps:
            epoch = state.epoch + state.step_in_epoch / state.steps_per_epoch if state.steps_per_epoch else state.epoch
            entry = {"step": step, "epoch": epoch, **self.window.summary(self.global_batch), "lr": lr,
                     "grad_norm": result["grad_norm"], "failed_loads": state.failed_loads,
                     "nonfinite_steps": state.nonfinite_steps}
            self.window.reset()
        if self.probe is not None and (step % args.effective_rank_steps == 0 or step == state.total_steps):
            entry = {"step": step, **entry, **probe_effective_rank(self.accelerator, self.model, self.probe)}
        if entry:
            self.log(entry)
        if args.save_steps > 0 and step % args.save_steps == 0 and step < state.total_steps:
            save_checkpoint(self.accelerator, self.model, self.data.feature_extractor, args.output_dir, state,
                            args.save_total_limit)
        if args.export_steps > 0 and step % args.export_steps == 0 and self.accelerator.is_main_process:
            export_encoder(self.accelerator, self.model, self.data.feature_extractor,
                           Path(args.output_dir) / f"encoder_step_{step}")


def next_batch(run: PretrainRun, batches: Iterator[dict]) -> dict | None:
    """The next batch, or None at the end of the epoch; with a streamed source every process stops together when
    one stream runs dry."""
    batch = next(batches, None)
    if run.data.stream is not None and run.accelerator.num_processes > 1:
        has_batch = torch.tensor([0.0 if batch is None else 1.0], device=run.accelerator.device)
        if not bool(run.accelerator.gather(has_batch).min().item()):
            return None
    return batch


def train_one_epoch(run: PretrainRun) -> bool:
    """Train from `run.state`'s position to the end of its epoch (or of the run); returns whether the epoch had any
    batch."""
    had_batches = False
    batches = run.data.epoch(run.state, run.args, run.accelerator)
    timer = run.window.timer
    while run.state.global_step < run.state.total_steps:
        timer.start()
        batch = next_batch(run, batches)
        if batch is None:
            break
        had_batches = True
        run.record_failures(batch.pop("failures"))
        timer.mark("data_wait")
        lr = run.scheduler.get_last_lr()[0]
        result = training_step(run.accelerator, run.model, run.optimizer, batch, run.args.max_grad_norm, timer)
        run.scheduler.step()  # follows the global step, whether or not the update was applied
        run.count_step(result)
        run.after_step(result, lr)
    return had_batches


def model_threads(data_args: DataArguments, args: PretrainingArguments) -> int:
    """Torch threads of the main process: `--torch_threads`, else on CPU the cores the DataLoader workers leave.
    Waveform augmentation keeps every worker busy (one thread each); spectral workers are mostly idle (a batch's views
    cost a fraction of its step), so the model takes every core."""
    if args.torch_threads:
        return args.torch_threads
    if not (args.use_cpu or not torch.cuda.is_available()):
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy_workers = args.dataloader_num_workers if data_args.augmentation_backend == "waveform" else 0
    return max(1, cores - busy_workers)


def train(model_args: ModelArguments, data_args: DataArguments, args: PretrainingArguments) -> PretrainState:
    """Run (or resume) pretraining; returns the final state. The caller's torch thread count is restored after."""
    check_args(data_args, args)
    callers_threads = torch.get_num_threads()
    torch.set_num_threads(model_threads(data_args, args))
    try:
        if args.activation_memory_budget is None:
            return run_pretraining(model_args, data_args, args)
        # Read by the compiler's partitioner when the step is first compiled (torch >= 2.4).
        with torch._functorch.config.patch(activation_memory_budget=args.activation_memory_budget):
            return run_pretraining(model_args, data_args, args)
    finally:
        torch.set_num_threads(callers_threads)


def run_pretraining(model_args: ModelArguments, data_args: DataArguments, args: PretrainingArguments) -> PretrainState:
    dynamo_plugin = TorchDynamoPlugin(backend="inductor") if args.torch_compile else None
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.use_cpu, dynamo_plugin=dynamo_plugin,
                              log_with=args.report_to or None, project_dir=args.output_dir)
    setup_logging(accelerator.is_main_process)
    resume_from = resolve_resume(args)
    if resume_from is None and accelerator.is_main_process:
        start_fresh(args)
    accelerator.wait_for_everyone()

    # Model: identical initialisation on every process, then per-rank seeds for masking and drop path.
    config = build_pretraining_config(model_args, data_args.max_length)
    set_seed(args.seed)
    model = build_model(model_args, config)
    set_seed(args.seed + accelerator.process_index)
    checkpointed = configure_memory(model, model_args, args)
    if accelerator.num_processes > 1 and model_args.sync_batchnorm and config.projector_norm == "batch_norm":
        if accelerator.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.warning("SyncBatchNorm needs CUDA: the projector BatchNorms use per-process statistics here.")
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                                eps=args.adam_epsilon)
    model, optimizer = accelerator.prepare(model, optimizer)

    data = build_training_data(accelerator, data_args, args, config)
    total_steps, warmup_steps = schedule_lengths(args, data.steps_per_epoch)
    # Not `prepare`d: Accelerate would step it once per process; registered so that checkpoints hold it.
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps, total_steps, args.min_lr)
    accelerator.register_for_checkpointing(scheduler)

    probe = None
    if accelerator.is_main_process and data_args.probe_size > 1 and args.effective_rank_steps > 0:
        probe = probe_features(data.source, data.feature_extractor, data_args.probe_size)

    clips = len(data.source) if data.dataset is not None else None
    state = PretrainState(total_steps, data.steps_per_epoch, accelerator.num_processes,
                          args.per_device_train_batch_size,
                          run=run_definition(config, data_args, args, clips, total_steps, warmup_steps))
    output_dir = Path(args.output_dir)
    log_path = output_dir / "log.jsonl"
    if resume_from is not None:
        load_checkpoint(accelerator, resume_from, state, log_path, args.force_resume)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "pretrain_args.json").write_text(json.dumps(
            {"model": dataclasses.asdict(model_args), "data": dataclasses.asdict(data_args),
             "training": dataclasses.asdict(args)}, indent=2))
    if args.report_to:
        accelerator.init_trackers(args.run_name, config=_flat_config(model_args, data_args, args))

    run = PretrainRun(accelerator, model, optimizer, scheduler, data, args, state, probe, log_path)
    logger.info(
        "Pretraining %.2fM parameters on %s clips: %d process(es) x %d = %d per step, %s steps per epoch, %d steps "
        "(%d warm-up); gradient checkpointing on %d of %d blocks; mixed precision %s.",
        sum(p.numel() for p in accelerator.unwrap_model(model).parameters()) / 1e6,
        len(data.source) if data.dataset is not None else "streamed", accelerator.num_processes,
        args.per_device_train_batch_size, run.global_batch, data.steps_per_epoch, total_steps, warmup_steps,
        sum(checkpointed), len(checkpointed), args.mixed_precision,
    )
    if probe is not None and state.global_step == 0:
        run.log({"step": 0, **probe_effective_rank(accelerator, model, probe)})
    if accelerator.is_main_process and not args.disable_tqdm:
        from tqdm.auto import tqdm

        run.progress = tqdm(total=total_steps, initial=state.global_step, desc="pretrain", dynamic_ncols=True)

    resumed_at = state.global_step if resume_from is not None else None
    model.train()
    while state.global_step < total_steps:
        if state.steps_per_epoch is not None and state.step_in_epoch >= state.steps_per_epoch:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        if not train_one_epoch(run):
            raise ValueError(f"{data_args.dataset} produced no complete batch of {args.per_device_train_batch_size} "
                             "clips in an epoch (empty after filtering, or every clip unreadable).")
        if state.global_step < total_steps:
            state.epoch, state.step_in_epoch, state.stream_consumed = state.epoch + 1, 0, 0

    if run.progress is not None:
        run.progress.close()
    if resumed_at != state.global_step:  # the final checkpoint, unless this run resumed from it
        save_checkpoint(accelerator, model, data.feature_extractor, args.output_dir, state, args.save_total_limit)
    if accelerator.is_main_process:
        export_encoder(accelerator, model, data.feature_extractor, output_dir)
        state.write(output_dir / STATE_FILE)
        logger.info("Done: %d steps, %d skipped non-finite, %d unreadable clip loads; encoder saved to %s.",
                    state.global_step, state.nonfinite_steps, state.failed_loads, args.output_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return state


def _flat_config(*parts) -> dict:
    flat = {}
    for part in parts:
        for key, value in dataclasses.asdict(part).items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def main(argv: list[str] | None = None) -> PretrainState:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
    setup_logging()  # before parsing: deprecation warnings of renamed arguments
    return train(*parse_args(argv))


if __name__ == "__main__":
    main()
