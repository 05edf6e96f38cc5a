"""Probe a frozen AudioMosaic encoder: last-layer linear probe, per-layer probes (a layer sweep), weighted-sum and
attentive probes over layers (the authors' `AudioMosaicLayerProbe`, `...WeightedSumProbe`, `...AttentiveProbe`, spec
§7), on any labelled audio data.

    python training/probe.py --recipe training/recipes/probe_generic.yaml \
        --dataset ../shared/data/speechcommands_test/meta.csv --audio_column filename --label_column label \
        --fold_column fold --train_folds 1,2,3,4 --eval_folds 5 --max_length 128 \
        --feature_extractor_preset speechcommands --model_name_or_path runs/pretrain \
        --probes linear,layer_sweep,weighted_sum,attentive --output_dir runs/probe

Cached features. With a frozen encoder and no per-epoch augmentation, every probe is a function of a few pooled
vectors per layer, so the encoder runs once per clip (`--cache_features`, default) instead of once per clip and epoch:

* last-layer / layer probes read `pool(block_k)` (mean over all tokens incl. cls, or cls), then the trained `fc_norm`
  and linear head: cached exactly;
* the weighted-sum probe's input `pool(sum_k w_k block_k) = sum_k w_k pool(block_k)` (pooling is linear): cached
  exactly from the same pooled vectors;
* the attentive probe applies a per-layer LayerNorm to every token *before* averaging. A LayerNorm is a per-token
  standardisation followed by an element-wise affine map, and only the affine map is trained, so
  `mean_t(LN_k(h_t)) = gamma_k * mean_t(standardise(h_t)) + beta_k`: caching the pooled *standardised* tokens of every
  layer (no token tensors) makes it exact too.

The cached and the non-cached path (the full model with its encoder in eval mode, recomputed every epoch) share the
training loop: the same data order (a seeded generator), optimiser (AdamW, parameter groups as in fine-tuning),
warm-up + cosine schedule and loss, so with the same seed they give the same probe up to float rounding
(`tests/test_probe.py` checks it; `benchmarks/bench_probe_cache.py` measures the speed-up).
Dataset-level augmentation (mixup, SpecAugment, roll, noise) changes the encoder input every epoch and cannot be
cached: the authors' AS/ESC linear-probe recipes use it, so they run with `cache_features: false`.

Outputs in `--output_dir`: `results.json`, `probe_results.md` (one row per probe), and for a layer sweep
`layer_sweep.csv` and `layer_sweep.png` (score per block, like the paper's Fig. 3).
"""

import copy
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transformers import set_seed

from modeling_audiomosaic import AudioMosaicForAudioClassification, AudioMosaicModel
from modeling_audiomosaic.caching import atomic_write, fingerprint, model_fingerprint
from modeling_audiomosaic.inputs import resolve_device
from modeling_audiomosaic.modeling_audiomosaic import pooled_blocks, standardized_block_means

from .arguments import parse_args_with_recipe
from .classification import (
    DataArguments,
    ModelArguments,
    PreparedRun,
    build_model,
    classification_metrics,
    prepare,
    read_sample_weights,
)
from .data import cut_batches
from .logger import setup_logging
from .optim import build_optimizer, scaled_learning_rate, warmup_cosine_schedule


logger = logging.getLogger("audiomosaic.probe")

PROBES = {
    "linear": "linear",  # last block, pooled -> fc_norm -> linear (the authors' classifier-based linear probe)
    "layer": "layer_probe",  # one block (--probe_layer)
    "weighted_sum": "weighted_sum_probe",
    "attentive": "attentive_probe",
    "layer_sweep": "layer_probe",  # one layer probe per block
}
ALL_PROBES = "linear,layer_sweep,weighted_sum,attentive"


@dataclass
class ProbeArguments:
    output_dir: str = field(default="probe_output", metadata={"help": "where results, tables and plots go"})
    probes: str = field(
        default="linear",
        metadata={"help": "comma-separated: linear (last layer), layer (--probe_layer), weighted_sum, attentive, "
                          "layer_sweep (every block, or --sweep_layers), or 'all'"},
    )
    sweep_layers: str | None = field(default=None, metadata={"help": "blocks of the sweep (0-based); default all"})
    cache_features: bool = field(default=True, metadata={"help": "extract pooled per-layer features once"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "keep extracted features on disk here and reuse them across runs"}
    )
    num_train_epochs: int = field(default=60, metadata={"help": "epochs"})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "training batch size"})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "evaluation / extraction batch size"})
    blr: float | None = field(default=1e-3, metadata={"help": "base lr: learning_rate = blr x batch / 256"})
    learning_rate: float | None = field(default=None, metadata={"help": "absolute learning rate (overrides blr)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    weight_decay_on_all_params: bool = field(
        default=False,
        metadata={"help": "decay every trainable tensor (the authors' probe classes) instead of skipping 1-D ones"},
    )
    layer_decay: float = field(
        default=0.75, metadata={"help": "LLRD (the head and fc_norm sit at the top layer id: scale 1)"}
    )
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up epochs"})
    min_lr: float = field(default=1e-6, metadata={"help": "final learning rate of the cosine schedule"})
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.999)
    adam_epsilon: float = field(default=1e-8)
    seed: int = field(default=0, metadata={"help": "seed of the head initialisation, data order and dropout"})
    dataloader_drop_last: bool = field(default=False, metadata={"help": "drop the last incomplete batch"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "audio decoding workers (non-cached path)"})
    metric_for_best_model: str = field(
        default="accuracy", metadata={"help": "score of the sweep table and plot: accuracy | mAP | mAUC | eer"}
    )
    save_models: bool = field(
        default=False, metadata={"help": "save each probe (not the sweep) as a model folder with card"}
    )
    device: str | None = field(default=None, metadata={"help": "cpu / cuda (default: cuda when available)"})

    def __post_init__(self):
        for name in ("num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")


# ----------------------------------------------------------------------------------------------------------------------
# Feature cache
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def extract_layer_features(encoder: AudioMosaicModel, loader: DataLoader, device: torch.device,
                           description: str = "features") -> dict[str, torch.Tensor]:
    """Per-block pooled features of every clip, the inputs of the probe heads: `pooled` (N, depth, D) =
    `pooled_blocks` (`encoder.pool(block_k)`) and `standardized` (N, depth, D) = `standardized_block_means` (token
    mean of the affine-free LayerNorm of block_k, for the attentive probe)."""
    encoder.eval()
    pooled, standardized = [], []
    for batch in tqdm(loader, desc=f"Extracting {description}", leave=False):
        inputs = batch["input_values"].to(device)
        mask = batch.get("attention_mask")
        out = encoder(inputs, attention_mask=None if mask is None else mask.to(device), output_hidden_states=True)
        pooled.append(pooled_blocks(encoder, out).cpu())
        standardized.append(standardized_block_means(encoder, out).cpu())
    return {"pooled": torch.cat(pooled), "standardized": torch.cat(standardized)}


def cache_fingerprint(encoder: AudioMosaicModel, prepared: PreparedRun, data_args: DataArguments, split: str) -> str:
    """Hash of everything the cached features depend on: encoder weights, feature extraction and every clip (as a
    list: `datasets`' lazy column prints only its first five values)."""
    hf = prepared.train_hf if split == "train" else prepared.eval_hf
    return fingerprint(model_fingerprint(encoder), prepared.feature_extractor.to_json_string(),
                       [prepared.max_length, data_args.truncate_samples, data_args.sampling_rate], list(hf["audio"]))


def cached_features(encoder: AudioMosaicModel, prepared: PreparedRun, data_args: DataArguments, split: str,
                    batch_size: int, device: torch.device,
                    cache_dir: str | None = None) -> dict[str, torch.Tensor]:
    path = None
    if cache_dir:
        path = Path(cache_dir) / f"{split}-{cache_fingerprint(encoder, prepared, data_args, split)}.safetensors"
        if path.is_file():
            from safetensors.torch import load_file

            logger.info("Reusing cached %s features from %s", split, path)
            return {**load_file(str(path)), "from_disk": True}
    dataset = prepared.dataset(data_args, split, augment=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=prepared.collator(data_args))
    features = extract_layer_features(encoder, loader, device, split)
    if path is not None:
        from safetensors.torch import save_file

        with atomic_write(path) as partial:
            save_file({k: v.contiguous() for k, v in features.items()}, str(partial))
    return features


def cached_head_logits(model: AudioMosaicForAudioClassification, pooled: torch.Tensor,
                       standardized: torch.Tensor) -> torch.Tensor:
    """`model`'s head applied to cached per-block features (B, depth, D) through the same modules as its forward;
    equals `model(inputs).logits` for a frozen encoder in eval mode."""
    head_inputs = {"pooled": pooled[:, -1], "pooled_blocks": pooled, "standardized_block_means": standardized}
    if model.head.reads not in head_inputs:
        raise ValueError(f"classifier_type {model.config.classifier_type!r} has no cached probe (it reads every "
                         "token).")
    return model.head_logits(head_inputs[model.head.reads])


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def _labels_tensor(prepared: PreparedRun, split: str) -> torch.Tensor:
    targets = prepared.train_targets if split == "train" else prepared.eval_targets
    if prepared.loss == "bce":
        out = torch.zeros(len(targets), len(prepared.labels.keys))
        for row, ids in enumerate(targets):
            out[row, ids] = 1.0
        return out
    return torch.tensor([ids[-1] for ids in targets], dtype=torch.long)


def learning_rate(args: ProbeArguments) -> float:
    if args.learning_rate is not None:
        return args.learning_rate
    if args.blr is None:
        raise ValueError("Set --blr or --learning_rate.")
    return scaled_learning_rate(args.blr, args.per_device_train_batch_size)


def epoch_batches(num_examples: int, batch_size: int, drop_last: bool, generator: torch.Generator,
                  weights: torch.Tensor | None = None, epoch_size: int | None = None) -> list[list[int]]:
    """One epoch of batches: a seeded permutation, or `epoch_size` rows drawn without replacement with `weights`
    (the authors' AS-2M WeightedRandomSampler)."""
    if weights is None:
        order = torch.randperm(num_examples, generator=generator).tolist()
    else:
        order = torch.multinomial(weights, epoch_size or num_examples, replacement=False, generator=generator).tolist()
    return cut_batches(order, batch_size, drop_last)


class ProbeTrainStats(TypedDict):
    train_seconds: float
    steps: int
    final_loss: float
    learning_rate: float


def train_probe(model: AudioMosaicForAudioClassification, prepared: PreparedRun, data_args: DataArguments,
                args: ProbeArguments, device: torch.device, train_cache: dict | None = None) -> ProbeTrainStats:
    """Train `model`'s head (its encoder frozen, in eval mode) on cached features when `train_cache` is given, else
    on audio through the full model; returns training statistics."""
    model.to(device)
    model.freeze_encoder()
    model.train()
    lr = learning_rate(args)
    optimizer = build_optimizer(model, lr, args.weight_decay, args.layer_decay, args.weight_decay_on_all_params,
                                betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    num_examples = len(prepared.train_targets)
    weights, epoch_size = None, num_examples
    if data_args.sample_weights_file:
        weights = torch.as_tensor(read_sample_weights(data_args.sample_weights_file, prepared.train_hf))
        epoch_size = data_args.weighted_sample_size or num_examples
        if epoch_size > int((weights > 0).sum()):
            raise ValueError(f"--weighted_sample_size {epoch_size} exceeds the {int((weights > 0).sum())} clips with a "
                             "positive weight (sampling is without replacement).")
    per_epoch = epoch_size // args.per_device_train_batch_size if args.dataloader_drop_last \
        else math.ceil(epoch_size / args.per_device_train_batch_size)
    if per_epoch == 0:
        raise ValueError(f"{num_examples} training clips make no full batch of {args.per_device_train_batch_size}.")
    total_steps = per_epoch * args.num_train_epochs
    scheduler = warmup_cosine_schedule(optimizer, int(round(args.warmup_epochs * per_epoch)), total_steps,
                                       args.min_lr)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # head dropout
    if train_cache is not None:
        pooled = train_cache["pooled"].to(device)
        standardized = train_cache["standardized"].to(device)
        labels_all = _labels_tensor(prepared, "train").to(device)
    else:
        dataset = prepared.dataset(data_args, "train")
        collator = prepared.collator(data_args)
    start = time.perf_counter()
    losses = []
    for _ in range(args.num_train_epochs):
        batches = epoch_batches(num_examples, args.per_device_train_batch_size, args.dataloader_drop_last, generator,
                                weights, epoch_size)
        if train_cache is not None:
            stream = ((torch.tensor(b, device=device), None) for b in batches)
        else:
            # A private generator: the loader must not consume the global RNG (the head's dropout draws from it).
            loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collator,
                                num_workers=args.dataloader_num_workers, generator=torch.Generator())
            stream = ((None, batch) for batch in loader)
        for index, batch in stream:
            if batch is None:
                logits = cached_head_logits(model, pooled[index], standardized[index])
                labels = labels_all[index]
            else:
                logits = model(batch["input_values"].to(device)).logits
                labels = batch["labels"].to(device)
            loss = model.classification_loss(logits, labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    return ProbeTrainStats(train_seconds=time.perf_counter() - start, steps=len(losses), final_loss=losses[-1],
                           learning_rate=lr)


@torch.no_grad()
def evaluate_probe(model: AudioMosaicForAudioClassification, prepared: PreparedRun, data_args: DataArguments,
                   args: ProbeArguments, device: torch.device, eval_cache: dict | None = None
                   ) -> tuple[dict, np.ndarray]:
    model.eval()
    logits = []
    if eval_cache is not None:
        pooled, standardized = eval_cache["pooled"], eval_cache["standardized"]
        for start in range(0, len(pooled), args.per_device_eval_batch_size):
            end = start + args.per_device_eval_batch_size
            logits.append(cached_head_logits(model, pooled[start:end].to(device),
                                             standardized[start:end].to(device)).cpu())
    else:
        loader = DataLoader(prepared.dataset(data_args, "eval"), batch_size=args.per_device_eval_batch_size,
                            shuffle=False, collate_fn=prepared.collator(data_args))
        for batch in loader:
            logits.append(model(batch["input_values"].to(device)).logits.cpu())
    model.train()
    logits = torch.cat(logits).numpy()
    return classification_metrics(logits, _labels_tensor(prepared, "eval").numpy()), logits


# ----------------------------------------------------------------------------------------------------------------------
# Probe models
# ----------------------------------------------------------------------------------------------------------------------


class ProbeFactory:
    """Builds probe models of every kind around one frozen encoder state; heads are initialised from the seed, so
    the same (kind, layer, seed) always starts from the same weights."""

    def __init__(self, base: AudioMosaicForAudioClassification, seed: int):
        self.config = base.config
        self.encoder_state = {k: v.detach().clone() for k, v in base.audiomosaic.state_dict().items()}
        self.seed = seed

    def __call__(self, kind: str, layer: int | None = None) -> AudioMosaicForAudioClassification:
        config = copy.deepcopy(self.config)
        config.classifier_type = PROBES[kind]
        config.freeze_encoder = True
        if layer is not None:
            config.probe_layer = layer
        torch.manual_seed(self.seed)
        model = AudioMosaicForAudioClassification(config)
        model.audiomosaic.load_state_dict(self.encoder_state)
        model.freeze_encoder()
        return model


def check_cacheable(data_args: DataArguments) -> None:
    augmentations = {"mixup": data_args.mixup, "freqm": data_args.freqm, "timem": data_args.timem,
                     "roll_magnitude": data_args.roll_magnitude, "spc_noise": data_args.spc_noise}
    active = {k: v for k, v in augmentations.items() if v}
    if active:
        raise ValueError(
            f"Cached features cannot carry per-epoch augmentation ({active}): the encoder input changes every epoch. "
            "Turn the augmentation off or run with --cache_features false (the encoder then runs every epoch)."
        )


def parse_probes(spec: str, depth: int, sweep_layers: str | None) -> list[tuple[str, str, int | None]]:
    """[(name, kind, layer)] for the requested probes."""
    names = [p.strip() for p in (ALL_PROBES if spec.strip() == "all" else spec).split(",") if p.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise ValueError(f"Unknown probe(s) {unknown}; choose from {sorted(PROBES)} or 'all'.")
    jobs = []
    for name in names:
        if name == "layer_sweep":
            layers = range(depth) if sweep_layers is None else [int(x) for x in sweep_layers.split(",") if x.strip()]
            for layer in layers:
                if not -depth <= layer < depth:
                    raise ValueError(f"--sweep_layers: block {layer} does not exist (depth {depth}).")
                jobs.append((f"layer_{layer % depth}", "layer_sweep", layer % depth))
        elif name == "layer":
            jobs.append(("layer", "layer", None))
        else:
            jobs.append((name, name, None))
    return jobs


def write_sweep(output_dir: Path, sweep: dict[int, dict], metric: str, others: dict[str, dict]) -> tuple[Path, Path]:
    """`layer_sweep.csv` and `layer_sweep.png` (score per block; other probes as horizontal lines)."""
    layers = sorted(sweep)
    csv_path = output_dir / "layer_sweep.csv"
    keys = sorted({k for m in sweep.values() for k in m if isinstance(m[k], (int, float))})
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["block", *keys])
        for layer in layers:
            writer.writerow([layer, *[sweep[layer].get(k) for k in keys]])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    scores = [sweep[layer][metric] for layer in layers]
    ax.plot([layer + 1 for layer in layers], scores, "o-", color="C0", label="layer probe")
    references = [(name, values[metric]) for name, values in others.items() if metric in values]
    for (name, value), style, color in zip(references, ("--", ":", "-.", (0, (5, 1))), ("C1", "C2", "C3", "C4")):
        ax.axhline(value, linestyle=style, color=color, label=f"{name} probe")
    everything = scores + [value for _, value in references]
    pad = 0.1 * (max(everything) - min(everything) or 1e-3)
    ax.set_ylim(min(everything) - pad, max(everything) + pad)
    ax.set_xlabel("block (1 = first; the authors' config layer{k} is block k+1)")
    ax.set_ylabel(metric)
    ax.set_xticks([layer + 1 for layer in layers])
    ax.set_title("Probe score per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    png_path = output_dir / "layer_sweep.png"
    fig.savefig(png_path)
    plt.close(fig)
    return csv_path, png_path


def run_probes(model_args: ModelArguments, data_args: DataArguments, args: ProbeArguments) -> dict:
    set_seed(args.seed)
    device = resolve_device(args.device)
    if data_args.cross_validation_folds:
        raise ValueError("probe.py evaluates one split per run; loop over --eval_folds instead of "
                         "--cross_validation_folds.")
    if args.cache_features:
        check_cacheable(data_args)
    prepared = prepare(model_args, data_args, args.seed)
    if prepared.eval_hf is None:
        raise ValueError("Probing needs an evaluation split: --eval_folds, --eval_split or --eval_dataset.")
    problem_type = "multi_label_classification" if prepared.loss == "bce" else "single_label_classification"
    head_args = copy.copy(model_args)
    head_args.classifier_type, head_args.freeze_encoder = "linear", True
    base = build_model(head_args, prepared.labels, problem_type, prepared.max_length)
    depth = base.config.num_hidden_layers
    jobs = parse_probes(args.probes, depth, args.sweep_layers)
    if model_args.probe_layer is not None:
        base.config.probe_layer = model_args.probe_layer
    factory = ProbeFactory(base, args.seed)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    caches = {}
    extraction_seconds = 0.0
    features_from_disk = False
    if args.cache_features:
        base.to(device)
        start = time.perf_counter()
        for split in ("train", "eval"):
            caches[split] = cached_features(base.audiomosaic, prepared, data_args, split,
                                            args.per_device_eval_batch_size, device, args.cache_dir)
        extraction_seconds = time.perf_counter() - start
        features_from_disk = all(cache.get("from_disk", False) for cache in caches.values())
        logger.info("Extracted per-layer features of %d + %d clips in %.1f s", len(prepared.train_targets),
                    len(prepared.eval_targets), extraction_seconds)
    del base

    results: dict = {}
    sweep: dict[int, dict] = {}
    for name, kind, layer in jobs:
        model = factory(kind, layer)
        stats = train_probe(model, prepared, data_args, args, device, caches.get("train"))
        start = time.perf_counter()
        metrics, _ = evaluate_probe(model, prepared, data_args, args, device, caches.get("eval"))
        stats["eval_seconds"] = time.perf_counter() - start
        entry = {**metrics, **stats, "classifier_type": model.config.classifier_type,
                 "probe_layer": model.config.probe_layer if kind in ("layer", "layer_sweep") else None}
        logger.info("%s probe: %s", name, {k: round(v, 4) for k, v in metrics.items()})
        if kind == "layer_sweep":
            sweep[layer] = entry
        else:
            results[name] = entry
            if args.save_models:
                from .publish import publish_run

                publish_run(output_dir / name, _run_summary(model_args, data_args, args, prepared, name, entry,
                                                            extraction_seconds),
                            model=model.cpu(), feature_extractor=prepared.feature_extractor)
    summary = _run_summary(model_args, data_args, args, prepared, None, None, extraction_seconds)
    summary["features_from_disk_cache"] = features_from_disk
    summary["probes"] = results
    if sweep:
        summary["layer_sweep"] = {str(k): v for k, v in sorted(sweep.items())}
        metric = args.metric_for_best_model
        if any(metric not in m for m in sweep.values()):
            raise ValueError(f"--metric_for_best_model {metric!r} is not among the computed metrics "
                             f"{sorted(next(iter(sweep.values())))}.")
        csv_path, png_path = write_sweep(output_dir, sweep, metric, results)
        summary["layer_sweep_table"], summary["layer_sweep_plot"] = str(csv_path), str(png_path)
        best = max(sweep, key=lambda k: sweep[k][metric] * (-1 if metric == "eer" else 1))
        summary["best_layer"] = {"block": best, metric: sweep[best][metric]}
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    (output_dir / "probe_results.md").write_text(results_table(summary))
    return summary


def _run_summary(model_args, data_args, args, prepared, probe, entry, extraction_seconds) -> dict:
    summary = {
        "task": "audio-classification",
        "script": "probe",
        "probe": probe,
        "model_name_or_path": model_args.model_name_or_path,
        "dataset": data_args.dataset,
        "train_folds": data_args.train_folds,
        "eval_folds": data_args.eval_folds,
        "num_train_examples": len(prepared.train_targets),
        "num_eval_examples": len(prepared.eval_targets),
        "labels": prepared.labels.names,
        "loss": prepared.loss,
        "max_length": prepared.max_length,
        "cached_features": args.cache_features,
        "feature_extraction_seconds": extraction_seconds,
        "learning_rate": learning_rate(args),
        "blr": args.blr if args.learning_rate is None else None,
        "num_train_epochs": args.num_train_epochs,
        "seed": args.seed,
        "freeze_encoder": True,
    }
    if entry is not None:
        summary["classifier_type"] = entry["classifier_type"]
        summary["eval"] = {k: v for k, v in entry.items() if k in ("accuracy", "mAP", "mAUC", "eer", "auc")}
    return summary


def results_table(summary: dict) -> str:
    rows = [(name, m) for name, m in summary.get("probes", {}).items()]
    rows += [(f"layer {k} (block {int(k) + 1})", m) for k, m in summary.get("layer_sweep", {}).items()]
    metrics = [k for k in ("accuracy", "mAP", "mAUC", "eer") if any(k in m for _, m in rows)]
    lines = [f"| probe | {' | '.join(metrics)} | train s |", "|---" * (len(metrics) + 2) + "|"]
    for name, m in rows:
        values = " | ".join(f"{m[k]:.4f}" if k in m else "" for k in metrics)
        lines.append(f"| {name} | {values} | {m['train_seconds']:.1f} |")
    extraction = summary.get("feature_extraction_seconds")
    clips = f"{summary['num_train_examples']} train + {summary['num_eval_examples']} eval clips"
    if summary.get("features_from_disk_cache"):
        lines.append(f"\nFeatures of the {clips} read from the disk cache in {extraction:.1f} s.")
    elif summary.get("cached_features"):
        lines.append(f"\nFeatures extracted once in {extraction:.1f} s ({clips}).")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, ProbeArguments]:
    return parse_args_with_recipe((ModelArguments, DataArguments, ProbeArguments), argv,
                                  prog="audiomosaic probe")


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    model_args, data_args, args = parse_args(argv)
    summary = run_probes(model_args, data_args, args)
    print(results_table(summary))
    return summary


if __name__ == "__main__":
    main()
