"""Fine-tune AudioMosaic for audio classification with transformers' `Trainer`.

The authors' recipes (spec §6) are YAML files in `training/recipes/finetune_*.yaml`; every key is one of the argument
dataclasses below and the command line overrides it:

    python training/finetune.py --recipe training/recipes/finetune_spc2.yaml \
        --dataset ../shared/data/speechcommands_test/meta.csv --audio_column filename --label_column label \
        --fold_column fold --train_folds 1,2,3,4 --eval_folds 5 \
        --model_name_or_path runs/pretrain --output_dir runs/spc --num_train_epochs 2

What it reproduces from the authors' `main_finetune.py` / `engine_finetune.py`:

* learning rate = `blr` x (per-device batch x accumulation x processes) / 256, printed at start;
* layer-wise learning-rate decay (`param_groups_lrd`): cls token, positional and patch embeddings get layer id 0,
  block i gets i + 1, everything else (pre-norm, fc_norm, heads) depth + 1; lr scale = decay^(depth + 1 - id); no
  weight decay on 1-D tensors, the cls token and the positional embeddings;
* linear warm-up over `warmup_epochs`, then a half-cycle cosine to `min_lr` per step (`cosine_with_min_lr`);
* waveform mixup (probability `mixup`, partner drawn uniformly, lambda ~ Beta(10, 10), multi-hot targets),
  roll/magnitude augmentation, SpecAugment (one frequency and one time mask, before normalisation in the authors'
  code, i.e. filled with the normalised value of a 0 log-Mel here), the Speech Commands noise-and-shift, and the
  training-time patch masking of the model (`mask_time_prob` / `mask_freq_prob`);
* AS-2M weighted sampling: `weighted_sample_size` clips per epoch drawn without replacement with per-clip weights;
* evaluation metrics (accuracy, mAP/mAUC, EER) from the `evaluate` modules shipped in `modeling_audiomosaic.metrics`.

After training the run folder holds the model (`save_pretrained`, feature extractor, `auto_map`), `results.json`
and a model card (`README.md`); `--push_to_hub --hub_model_id user/name` uploads it (see `training/publish.py`).
"""

import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import seed_worker

from .arguments import parse_args_with_recipe
from .classification import (
    DataArguments,
    ModelArguments,
    build_model,
    compute_metrics,
    prepare,
    read_sample_weights,
)
from .logger import setup_logging
from .optim import optimizer_kwargs, scaled_learning_rate


logger = logging.getLogger("audiomosaic.finetune")


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """TrainingArguments with the authors' learning-rate conventions. `learning_rate` is ignored when `blr` is set."""

    blr: float | None = field(
        default=None, metadata={"help": "base learning rate: learning_rate = blr x effective batch size / 256"}
    )
    layer_decay: float = field(default=0.75, metadata={"help": "layer-wise learning-rate decay (1.0 = none)"})
    warmup_epochs: float | None = field(default=None, metadata={"help": "linear warm-up length in epochs"})
    min_lr: float = field(default=1e-6, metadata={"help": "final learning rate of the cosine schedule"})
    weight_decay_on_all_params: bool = field(
        default=False,
        metadata={"help": "apply weight decay to every trainable tensor (the authors' probe classes pass no parameter "
                          "groups) instead of the LLRD groups"},
    )
    lr_scheduler_type: str = field(default="cosine_with_min_lr", metadata={"help": "learning-rate schedule"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep every column (on-the-fly features)"})

    def __post_init__(self):
        super().__post_init__()
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.blr is not None:
            self.learning_rate = scaled_learning_rate(self.blr, self.effective_batch_size)
        if self.lr_scheduler_type == "cosine_with_min_lr":
            kwargs = dict(self.lr_scheduler_kwargs or {})
            kwargs.setdefault("min_lr", self.min_lr)
            self.lr_scheduler_kwargs = kwargs

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * max(self.world_size, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------------


class AudioMosaicTrainer(Trainer):
    """`Trainer` with the authors' optimiser and training loader, through public extension points only:

    * AdamW over the layer-wise-decay groups, passed as `optimizer_cls_and_kwargs` (unless the caller gives one);
    * `get_train_dataloader`: the authors drop the last incomplete *training* batch (`drop_last`; evaluation keeps
      every clip, so `args.dataloader_drop_last` stays off) and, with `sample_weights`, draw `weighted_sample_size`
      clips per epoch without replacement (AS-2M).
    """

    def __init__(self, model: torch.nn.Module, args: "FinetuneTrainingArguments", *trainer_args,
                 drop_last: bool = False, sample_weights: np.ndarray | None = None,
                 weighted_sample_size: int | None = None, **kwargs):
        if kwargs.get("optimizer_cls_and_kwargs") is None and kwargs.get("optimizers", (None, None))[0] is None:
            kwargs["optimizer_cls_and_kwargs"] = (torch.optim.AdamW, optimizer_kwargs(
                model, args.learning_rate, args.weight_decay, getattr(args, "layer_decay", 1.0),
                getattr(args, "weight_decay_on_all_params", False), (args.adam_beta1, args.adam_beta2),
                args.adam_epsilon))
        super().__init__(model, args, *trainer_args, **kwargs)
        self.drop_last = drop_last
        self.sample_weights = sample_weights
        self.weighted_sample_size = weighted_sample_size

    def train_sampler(self) -> torch.utils.data.Sampler:
        if self.sample_weights is None:
            return RandomSampler(self.train_dataset)
        size = self.weighted_sample_size or len(self.sample_weights)
        return WeightedRandomSampler(torch.as_tensor(self.sample_weights, dtype=torch.double), num_samples=size,
                                     replacement=False)

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Training needs a train_dataset.")
        args = self.args
        loader = DataLoader(
            self.train_dataset,
            batch_size=args.per_device_train_batch_size,
            sampler=self.train_sampler(),
            collate_fn=self.data_collator,
            drop_last=self.drop_last,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        return self.accelerator.prepare(loader)


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def run(model_args: ModelArguments, data_args: DataArguments, training_args: FinetuneTrainingArguments,
        recipe: str | None = None) -> dict:
    """One fine-tuning run; returns the results dict also written to `<output_dir>/results.json`."""
    set_seed(training_args.seed)
    prepared = prepare(model_args, data_args, training_args.seed)
    problem_type = "multi_label_classification" if prepared.loss == "bce" else "single_label_classification"
    model = build_model(model_args, prepared.labels, problem_type, prepared.max_length)
    train_dataset = prepared.dataset(data_args, "train")
    eval_dataset = prepared.dataset(data_args, "eval") if prepared.eval_hf is not None else None

    sample_weights = None
    if data_args.sample_weights_file:
        sample_weights = read_sample_weights(data_args.sample_weights_file, prepared.train_hf)
        if data_args.weighted_sample_size and data_args.weighted_sample_size > int((sample_weights > 0).sum()):
            raise ValueError(
                f"--weighted_sample_size {data_args.weighted_sample_size} exceeds the {int((sample_weights > 0).sum())} "
                "training clips with a positive weight (sampling is without replacement)."
            )
    epoch_size = (data_args.weighted_sample_size or len(train_dataset)) if sample_weights is not None \
        else len(train_dataset)
    per_step = training_args.per_device_train_batch_size * max(training_args.world_size, 1)
    batches = epoch_size // per_step if training_args.dataloader_drop_last else math.ceil(epoch_size / per_step)
    steps_per_epoch = max(batches // training_args.gradient_accumulation_steps, 1 if batches else 0)
    if steps_per_epoch == 0:
        raise ValueError(
            f"{epoch_size} training clips make no full batch of {per_step} with dataloader_drop_last; lower "
            "--per_device_train_batch_size or turn off --dataloader_drop_last."
        )
    if training_args.blr is not None:
        logger.info("learning_rate = blr %g x effective batch %d / 256 = %g", training_args.blr,
                    training_args.effective_batch_size, training_args.learning_rate)
    settled = {
        # Trainer would drop the last batch of every loader; only training drops it (AudioMosaicTrainer.drop_last).
        "dataloader_drop_last": False,
        # Uploading is done once, by `publish_run` after training (folder + card); Trainer's own hub syncing is off.
        "push_to_hub": False,
    }
    if training_args.warmup_epochs is not None:
        settled["warmup_steps"] = int(round(training_args.warmup_epochs * steps_per_epoch))
    if eval_dataset is None and training_args.eval_strategy != "no":
        settled.update(eval_strategy="no", load_best_model_at_end=False)
    trainer = AudioMosaicTrainer(
        model,
        replace(training_args, **settled),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=prepared.collator(data_args),
        compute_metrics=compute_metrics,
        processing_class=prepared.feature_extractor,
        drop_last=training_args.dataloader_drop_last,
        sample_weights=sample_weights,
        weighted_sample_size=data_args.weighted_sample_size,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = trainer.evaluate() if eval_dataset is not None else {}
    output_dir = Path(training_args.output_dir)
    results = {
        "task": "audio-classification",
        "script": "finetune",
        "recipe": recipe,
        "model_name_or_path": model_args.model_name_or_path,
        "dataset": data_args.dataset,
        "dataset_config_name": data_args.dataset_config_name,
        "eval_dataset": data_args.eval_dataset,
        "train_folds": data_args.train_folds,
        "eval_folds": data_args.eval_folds,
        "num_train_examples": len(train_dataset),
        "num_eval_examples": len(eval_dataset) if eval_dataset is not None else 0,
        "labels": prepared.labels.names,
        "loss": prepared.loss,
        "classifier_type": model.config.classifier_type,
        "freeze_encoder": model.config.freeze_encoder,
        "max_length": prepared.max_length,
        "learning_rate": training_args.learning_rate,
        "blr": training_args.blr,
        "effective_batch_size": training_args.effective_batch_size,
        "layer_decay": training_args.layer_decay,
        "num_train_epochs": training_args.num_train_epochs,
        "seed": training_args.seed,
        "train": {"global_step": train_result.global_step, **train_result.metrics},
        "eval": {k.removeprefix("eval_"): v for k, v in metrics.items()},
    }
    if trainer.is_world_process_zero():
        from .publish import publish_run

        publish_run(
            output_dir,
            results,
            model=trainer.model,
            feature_extractor=prepared.feature_extractor,
            push_to_hub=training_args.push_to_hub,
            hub_model_id=training_args.hub_model_id,
            hub_token=training_args.hub_token,
            hub_private_repo=training_args.hub_private_repo,
        )
    return results


def run_cross_validation(model_args: ModelArguments, data_args: DataArguments,
                         training_args: "FinetuneTrainingArguments", recipe: str | None = None) -> dict:
    """One run per fold of `--cross_validation_folds` (trained on the others), averaged."""
    folds = [f.strip() for f in data_args.cross_validation_folds.split(",") if f.strip()]
    if len(folds) < 2:
        raise ValueError("--cross_validation_folds needs at least two folds.")
    base_dir = Path(training_args.output_dir)
    per_fold = {}
    for fold in folds:
        fold_data = DataArguments(**{**asdict(data_args), "cross_validation_folds": None, "eval_folds": fold,
                                     "train_folds": ",".join(f for f in folds if f != fold)})
        fold_args = _copy_training_args(training_args, base_dir / f"fold_{fold}")
        per_fold[fold] = run(model_args, fold_data, fold_args, recipe)["eval"]
    keys = sorted(set.intersection(*(set(m) for m in per_fold.values())))
    summary = {
        "task": "audio-classification",
        "script": "finetune",
        "recipe": recipe,
        "cross_validation_folds": folds,
        "per_fold": per_fold,
        "eval": {k: float(np.mean([m[k] for m in per_fold.values()])) for k in keys
                 if isinstance(next(iter(per_fold.values()))[k], (int, float))},
    }
    base_dir.mkdir(parents=True, exist_ok=True)
    (base_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _copy_training_args(training_args: FinetuneTrainingArguments, output_dir: Path) -> FinetuneTrainingArguments:
    # One model per fold: publish the fold you want with `audiomosaic publish`.
    return replace(training_args, output_dir=str(output_dir), push_to_hub=False)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, FinetuneTrainingArguments]:
    return parse_args_with_recipe((ModelArguments, DataArguments, FinetuneTrainingArguments), argv,
                                  prog="audiomosaic finetune")


def recipe_from_argv(argv: list[str] | None) -> str | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--recipe="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    model_args, data_args, training_args = parse_args(argv)
    recipe = recipe_from_argv(argv)
    if data_args.cross_validation_folds:
        results = run_cross_validation(model_args, data_args, training_args, recipe)
    else:
        results = run(model_args, data_args, training_args, recipe)
    print(json.dumps({"output_dir": training_args.output_dir, "eval": results["eval"]}, indent=2, default=str))
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
