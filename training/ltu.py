"""Train the AudioMosaic audio-language model (LTU layout) with transformers' `Trainer` and peft LoRA, one curriculum
stage per run; the authors' four stages are recipes (`training/recipes/ltu_stage{1..4}_*.yaml`):

    # stage 1: new projector + encoder LayerNorms on a frozen LM, no LoRA
    audiomosaic train-ltu --recipe ltu_stage1_projector --language_model BASE_LM \
        --audio_encoder PRETRAINED_ENCODER --dataset rows.csv --output_dir runs/ltu1
    # stages 2-4: encoder + projector + LoRA r 8 / alpha 16 on the LM's q_proj, v_proj; each starts from the last
    audiomosaic train-ltu --recipe ltu_stage2_all_cla --model_name_or_path runs/ltu1 \
        --dataset rows.csv --output_dir runs/ltu2        # (or python -m audiomosaic_training.ltu ...)

Data: any source `audiomosaic_training.data` opens (audio folder, CSV/JSON/Parquet list, save_to_disk folder, Hub id) with an
audio column, an instruction column (or one fixed `--instruction` for every row) and an answer column. Each stage
writes the composite (`save_pretrained`, with the trained encoder and projector and the untouched base LM), its
processor and, when LoRA is on, the peft adapter in `adapter/` (LoRA plus the trained encoder/projector copies);
with `--eval_folds` / `--eval_dataset` it also generates answers and writes their accuracy to `results.json`.
"""

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoFeatureExtractor, AutoTokenizer, Trainer, TrainingArguments, set_seed

from modeling_audiomosaic import (
    AudioMosaicConfig,
    AudioMosaicFeatureExtractor,
    AudioMosaicLtuForConditionalGeneration,
    AudioMosaicLtuProcessor,
    decode_audio,
)
from modeling_audiomosaic.caching import atomic_folder
from modeling_audiomosaic.convert_ltu import AUDIO_TOKEN, LTU_FEATURES
from modeling_audiomosaic.feature_extraction_audiomosaic import PRESETS
from modeling_audiomosaic.validation import (
    ENCODER_KINDS,
    check_fields,
    check_value,
    integer,
    language_model_reference,
    model_reference,
    number,
    output_folder,
)

from .arguments import parse_args_with_recipe
from .data import open_audio_dataset, select_folds, subsample
from .logger import setup_logging
from .models import parse_config_overrides


logger = logging.getLogger("audiomosaic.ltu")

TRAINABLE = ("projector_and_norms", "all")
AUDIO_POOLINGS = ("official", "time")
ADAPTER_DIR = "adapter"


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"argument --{option}: expected one of {', '.join(choices)}, got {value!r}")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "composite folder of a previous stage (its adapter/ is loaded too) or a converted release"},
    )
    language_model: str | None = field(default=None, metadata={"help": "base causal LM folder, to compose a new model"})
    audio_encoder: str | None = field(
        default=None, metadata={"help": "pretrained AudioMosaic encoder folder for a new model (default: random init)"}
    )
    audio_config_overrides: str | None = field(
        default=None,
        metadata={"help": "key=value AudioMosaicConfig fields of a random encoder, e.g. "
                          "'hidden_size=192,max_length=128'"},
    )
    audio_pooling: str = field(default="official", metadata={"help": "official (authors') | time (time-ordered)"})
    shuffle_patches_in_training: bool = field(
        default=False, metadata={"help": "the authors' training-mode random patch order before pooling"}
    )
    trainable: str = field(
        default="all",
        metadata={"help": "projector_and_norms (stage 1: projector, encoder fc_norm and pre-norm) | all (the whole "
                          "encoder and the projector); the language model itself stays frozen"},
    )
    use_lora: bool = field(default=True, metadata={"help": "LoRA on the language model (stages 2-4)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(default="q_proj,v_proj", metadata={"help": "LM projections that get LoRA"})

    def __post_init__(self):
        """Every model option is checked here, when the arguments are parsed, so that a wrong folder (e.g. a
        classifier given as --model_name_or_path, which would otherwise build a default 7B LLaMA) is named before
        anything is loaded or built. Only configs and weight-file headers are read."""
        if bool(self.model_name_or_path) == bool(self.language_model):
            raise ValueError("Give either --model_name_or_path (a previous stage's LTU folder) or --language_model (a "
                             "base causal LM, to compose a new model), not both or neither.")
        if self.model_name_or_path and self.audio_encoder:
            raise ValueError("--audio_encoder composes a new model with --language_model; a previous stage "
                             "(--model_name_or_path) brings its own encoder.")
        check_fields(self, {"model_name_or_path": model_reference("ltu"), "language_model": language_model_reference,
                            "audio_encoder": model_reference(*ENCODER_KINDS), "lora_r": integer(minimum=1),
                            "lora_alpha": integer(minimum=1), "lora_dropout": number(minimum=0, below=1)})
        check_choice("trainable", self.trainable, TRAINABLE)
        check_choice("audio_pooling", self.audio_pooling, AUDIO_POOLINGS)
        if self.use_lora and not [name for name in self.lora_target_modules.split(",") if name.strip()]:
            raise ValueError("argument --lora_target_modules: expected comma-separated module names, got "
                             f"{self.lora_target_modules!r}")
        if self.audio_config_overrides:
            if not self.language_model or self.audio_encoder:
                raise ValueError("--audio_config_overrides configures the random encoder of a new model (with "
                                 "--language_model and no --audio_encoder).")
            try:
                AudioMosaicConfig(**parse_config_overrides(self.audio_config_overrides))
            except (TypeError, ValueError) as error:
                raise ValueError(f"argument --audio_config_overrides: {error}") from None
        folder = Path(self.model_name_or_path or "")
        if self.model_name_or_path and folder.is_dir() and not (folder / "processor_config.json").is_file():
            raise ValueError(f"{folder} has no processor (processor_config.json and a tokenizer), which training "
                             "needs; convert the release with its tokenizer, or start from --language_model.")
        previous_adapter = folder / ADAPTER_DIR
        if self.model_name_or_path and not self.use_lora and previous_adapter.is_dir():
            raise ValueError(f"{previous_adapter} holds a LoRA adapter from the previous stage; keep --use_lora.")


@dataclass
class DataArguments:
    dataset: str = field(metadata={"help": "audio folder, CSV/JSON/Parquet list, save_to_disk folder or Hub id"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    train_split: str = field(default="train", metadata={"help": "split to train on (Hub / save_to_disk)"})
    eval_dataset: str | None = field(default=None, metadata={"help": "separate source to evaluate on"})
    eval_split: str | None = field(default=None, metadata={"help": "split to evaluate on"})
    audio_column: str = field(default="audio", metadata={"help": "column with the audio"})
    instruction_column: str = field(default="instruction", metadata={"help": "column with the instruction"})
    instruction: str | None = field(default=None, metadata={"help": "one instruction for every row (no column)"})
    answer_column: str = field(default="answer", metadata={"help": "column with the answer text"})
    fold_column: str | None = field(default=None, metadata={"help": "column holding folds"})
    train_folds: str | None = field(default=None, metadata={"help": "comma-separated folds to train on"})
    eval_folds: str | None = field(default=None, metadata={"help": "comma-separated folds to evaluate on"})
    max_train_samples: int | None = field(default=None, metadata={"help": "random subset of the training rows"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "random subset of the evaluation rows"})
    feature_extractor_preset: str | None = field(
        default=None,
        metadata={"help": "feature extractor of a new model: audioset | esc50 | speechcommands (default: the "
                          "encoder folder's, else LTU's 1024 frames with (x + 5.081) / 4.4849)"},
    )
    text_max_length: int = field(default=140, metadata={"help": "longest sequence in tokens incl. audio (108 + 32)"})
    train_on_prompt: bool = field(default=True, metadata={"help": "loss on the prompt too (the authors' setting)"})
    eval_max_new_tokens: int = field(default=16, metadata={"help": "tokens generated per evaluation answer"})
    num_examples: int = field(default=12, metadata={"help": "generated answers kept in results.json"})

    def __post_init__(self):
        check_fields(self, {"text_max_length": integer(minimum=1), "eval_max_new_tokens": integer(minimum=1),
                            "num_examples": integer(minimum=0), "max_train_samples": integer(minimum=1),
                            "max_eval_samples": integer(minimum=1)})
        if self.feature_extractor_preset is not None:
            check_choice("feature_extractor_preset", self.feature_extractor_preset, tuple(sorted(PRESETS)))
        for option in ("train_folds", "eval_folds"):
            if getattr(self, option) and not self.fold_column:
                raise ValueError(f"--{option} needs --fold_column (the column holding each row's fold).")


def build_processor(model_args: ModelArguments, data_args: DataArguments, tokenizer_source: str,
                    num_audio_tokens: int) -> AudioMosaicLtuProcessor:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)  # the authors pad with id 0
    tokenizer.padding_side = "left"
    tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
    if data_args.feature_extractor_preset:
        feature_extractor = AudioMosaicFeatureExtractor.from_preset(data_args.feature_extractor_preset)
    elif model_args.audio_encoder and (Path(model_args.audio_encoder) / "preprocessor_config.json").is_file():
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_args.audio_encoder)
    else:
        feature_extractor = AudioMosaicFeatureExtractor(**LTU_FEATURES)
    return AudioMosaicLtuProcessor(feature_extractor, tokenizer, audio_token=AUDIO_TOKEN,
                                   num_audio_tokens=num_audio_tokens)


def load_model(model_args: ModelArguments, data_args: DataArguments) -> tuple[torch.nn.Module, AudioMosaicLtuProcessor]:
    """-> (model, possibly peft-wrapped, with the stage's trainable parameters; processor). The arguments were
    checked when they were made (`ModelArguments.__post_init__`)."""
    if model_args.model_name_or_path:
        model = AudioMosaicLtuForConditionalGeneration.from_pretrained(model_args.model_name_or_path)
        model.config.shuffle_patches_in_training = model_args.shuffle_patches_in_training
        processor = AudioMosaicLtuProcessor.from_pretrained(model_args.model_name_or_path)
    elif model_args.language_model:
        tokenizer_probe = AutoTokenizer.from_pretrained(model_args.language_model)
        tokenizer_probe.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
        encoder_kwargs = {}
        if not model_args.audio_encoder:
            encoder_kwargs["audio_config"] = AudioMosaicConfig(
                **{"drop_path_rate": 0.0, **parse_config_overrides(model_args.audio_config_overrides)})
        model = AudioMosaicLtuForConditionalGeneration.from_audio_text_pretrained(
            model_args.language_model, audio_encoder=model_args.audio_encoder,
            audio_token_id=tokenizer_probe.convert_tokens_to_ids(AUDIO_TOKEN), audio_pooling=model_args.audio_pooling,
            shuffle_patches_in_training=model_args.shuffle_patches_in_training, **encoder_kwargs)
        processor = build_processor(model_args, data_args, model_args.language_model, model.config.num_audio_tokens)
    if processor.feature_extractor.max_length != model.config.audio_config.max_length:
        raise ValueError(
            f"The feature extractor makes {processor.feature_extractor.max_length} frames but the encoder expects "
            f"{model.config.audio_config.max_length}; choose a matching --feature_extractor_preset."
        )

    model.requires_grad_(False)
    if model_args.trainable == "projector_and_norms":
        trained = {"audio_projector": model.audio_projector, "fc_norm": model.audio_tower.fc_norm,
                   "pre_layernorm": model.audio_tower.embeddings.pre_layernorm}
    else:
        trained = {"audio_tower": model.audio_tower, "audio_projector": model.audio_projector}
    for module in trained.values():
        module.requires_grad_(True)

    previous_adapter = Path(model_args.model_name_or_path or "") / ADAPTER_DIR
    if model_args.use_lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        if model_args.model_name_or_path and previous_adapter.is_dir():
            model = PeftModel.from_pretrained(model, previous_adapter, is_trainable=True)
        else:
            targets = "|".join(re.escape(name.strip()) for name in model_args.lora_target_modules.split(","))
            lora_config = LoraConfig(
                r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                bias="none", task_type="CAUSAL_LM", target_modules=rf".*language_model.*\.({targets})",
                # The trained audio modules travel with the adapter, so Trainer checkpoints can resume.
                modules_to_save=list(trained),
            )
            model = get_peft_model(model, lora_config)
    return model, processor


class InstructionCollator:
    """Rows (audio, instruction, answer) -> the processor's batch with labels."""

    def __init__(self, processor: AudioMosaicLtuProcessor, data_args: DataArguments):
        self.processor = processor
        self.data_args = data_args

    def instruction(self, row: dict) -> str:
        return self.data_args.instruction or str(row[self.data_args.instruction_column])

    def waveforms(self, rows: list[dict]) -> list:
        rate = self.processor.feature_extractor.sampling_rate
        return [decode_audio(row["audio"], rate) for row in rows]

    def __call__(self, rows: list[dict]) -> dict:
        return self.processor(
            text=[self.processor.build_prompt(self.instruction(row)) for row in rows],
            audio=self.waveforms(rows),
            answers=[str(row[self.data_args.answer_column]) for row in rows],
            sampling_rate=self.processor.feature_extractor.sampling_rate,
            train_on_prompt=self.data_args.train_on_prompt,
            max_length=self.data_args.text_max_length,
            pad_to_multiple_of=8,
        )


def normalise_answer(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@torch.no_grad()
def evaluate_generation(model: torch.nn.Module, collator: InstructionCollator, dataset: Dataset, batch_size: int,
                        max_new_tokens: int,
                        num_examples: int) -> dict:
    """Greedy answers for every row; accuracy = normalised exact match with the reference answer."""
    from tqdm.auto import tqdm

    processor = collator.processor
    model.eval()
    device = next(model.parameters()).device
    correct, examples = 0, []
    for start in tqdm(range(0, len(dataset), batch_size), desc="Generating answers"):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = processor(text=[processor.build_prompt(collator.instruction(row)) for row in rows],
                          audio=collator.waveforms(rows), sampling_rate=processor.feature_extractor.sampling_rate)
        batch = batch.to(device)
        generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=processor.tokenizer.pad_token_id)
        answers = processor.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for row, answer in zip(rows, answers):
            reference = str(row[collator.data_args.answer_column])
            hit = normalise_answer(answer) == normalise_answer(reference)
            correct += hit
            if len(examples) < num_examples:
                examples.append({"instruction": collator.instruction(row), "reference": reference,
                                 "generated": answer.strip(), "correct": bool(hit)})
    return {"accuracy": correct / max(len(dataset), 1), "num_eval": len(dataset), "examples": examples}


def open_split(data_args: DataArguments, source: str, split: str, folds: str | None, max_samples: int | None,
               seed: int) -> Dataset:
    dataset = open_audio_dataset(source, split, data_args.audio_column, data_args.dataset_config_name)
    dataset = subsample(select_folds(dataset, data_args.fold_column, folds, source, split), max_samples, seed)
    columns = [data_args.answer_column] + ([] if data_args.instruction else [data_args.instruction_column])
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{source} has no column(s) {missing} (columns: {dataset.column_names}); set "
                         "--answer_column / --instruction_column, or one --instruction for every row.")
    return dataset


def save_stage(model: torch.nn.Module, processor: AudioMosaicLtuProcessor, output_dir: Path) -> None:
    """Composite (trained audio modules, untouched base LM) + processor, and the peft adapter when LoRA is on."""
    if hasattr(model, "peft_config"):
        model.save_pretrained(output_dir / ADAPTER_DIR)
        model = model.unload()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)


def check_training_arguments(training_args: TrainingArguments) -> None:
    """The `TrainingArguments` a stage needs in range, checked before the data and the model are loaded (Trainer
    would only find them at its first step)."""
    check_value("--output_dir", training_args.output_dir, output_folder)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        check_value(f"--{name}", getattr(training_args, name), integer(minimum=1))
    check_value("--learning_rate", training_args.learning_rate, number(minimum=0))
    if training_args.max_steps <= 0:  # -1: train for num_train_epochs instead
        check_value("--num_train_epochs", training_args.num_train_epochs, number(above=0))


def main(argv: list[str] | None = None) -> dict:
    setup_logging()
    model_args, data_args, training_args = parse_args_with_recipe(
        (ModelArguments, DataArguments, TrainingArguments), argv, prog="audiomosaic train-ltu")
    check_training_arguments(training_args)
    set_seed(training_args.seed)
    training_args.remove_unused_columns = False  # the collator reads the raw columns

    # The data first: a wrong column or fold is reported before a large language model is loaded.
    train_dataset = open_split(data_args, data_args.dataset, data_args.train_split, data_args.train_folds,
                               data_args.max_train_samples, training_args.seed)
    eval_dataset = None
    if data_args.eval_dataset or data_args.eval_folds or data_args.eval_split:
        eval_dataset = open_split(data_args, data_args.eval_dataset or data_args.dataset,
                                  data_args.eval_split or data_args.train_split, data_args.eval_folds,
                                  data_args.max_eval_samples, training_args.seed)
    model, processor = load_model(model_args, data_args)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable parameters: %d of %d", trainable, sum(p.numel() for p in model.parameters()))
    collator = InstructionCollator(processor, data_args)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, data_collator=collator)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    output_dir = Path(training_args.output_dir)
    results = {"train": train_result.metrics, "trainable_parameters": trainable}
    if eval_dataset is not None:
        results["eval"] = evaluate_generation(model, collator, eval_dataset, training_args.per_device_eval_batch_size,
                                              data_args.eval_max_new_tokens, data_args.num_examples)
        logger.info("generated-answer accuracy: %.4f on %d rows", results["eval"]["accuracy"], len(eval_dataset))
    if trainer.is_world_process_zero():
        with atomic_folder(output_dir) as staging:  # the stage's files appear together, or not at all
            save_stage(model, processor, staging)
            (staging / "results.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
