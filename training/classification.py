"""The labelled-audio side shared by fine-tuning (`finetune.py`) and probing (`probe.py`): model and data arguments,
label sets, splits and folds, the on-the-fly dataset with the authors' waveform augmentations, the feature collator
with SpecAugment, the classification model builder and the evaluation metrics."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import Dataset as TorchDataset
from transformers import EvalPrediction

from modeling_audiomosaic import AudioMosaicFeatureExtractor, AudioMosaicForAudioClassification
from modeling_audiomosaic.feature_extraction_audiomosaic import decode_audio
from audiomosaic_training.metrics import load_metric
from modeling_audiomosaic.norm_stats import AUTO_PRESET

from .arguments import AudioDataArguments
from .augment import roll_and_scale, spec_augment_mask
from .data import open_audio_dataset, open_train_split, select_folds, subsample
from .models import build_config, build_feature_extractor, parse_config_overrides


logger = logging.getLogger("audiomosaic.classification")

LOSSES = ("auto", "bce", "ce")

# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "AudioMosaic checkpoint folder or Hub id (pretrained, converted or fine-tuned). Without it a "
                          "new model is built from --config_name / --config_overrides (random initialisation)."},
    )
    config_name: str | None = field(default=None, metadata={"help": "config.json (or folder) for a new model"})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "comma-separated key=value config fields for a new model, e.g. "
                          "'hidden_size=192,num_hidden_layers=4,num_attention_heads=3,intermediate_size=768'"},
    )
    classifier_type: str = field(
        default="linear",
        metadata={"help": "linear | layer_probe | weighted_sum_probe | attentive_probe | aasist"},
    )
    probe_layer: int | None = field(default=None, metadata={"help": "block read by a layer probe (0-based)"})
    freeze_encoder: bool = field(default=False, metadata={"help": "train only the head and fc_norm (linear probing)"})
    mask_time_prob: float = field(default=0.0, metadata={"help": "training patch masking: share of time rows dropped"})
    mask_freq_prob: float = field(default=0.0, metadata={"help": "training patch masking: share of frequency columns"})
    drop_path_rate: float | None = field(default=None, metadata={"help": "stochastic depth (default: checkpoint's)"})
    classifier_dropout: float = field(default=0.0, metadata={"help": "dropout before the linear head"})
    class_weights: str | None = field(
        default=None, metadata={"help": "comma-separated per-class weights of the cross-entropy, in label order"}
    )
    position_embedding_resize: str = field(
        default="official",
        metadata={"help": "how to resize the checkpoint's positional embeddings to --max_length: 'official' (the "
                          "authors' loader) or 'grid'"},
    )


@dataclass
class DataArguments(AudioDataArguments):
    """Labelled data for fine-tuning and probing: the shared `AudioDataArguments` plus labels, the evaluation split
    and the authors' classification augmentations."""

    eval_split: str | None = field(default=None, metadata={"help": "split to evaluate on (Hub / save_to_disk)"})
    eval_dataset: str | None = field(default=None, metadata={"help": "separate source to evaluate on"})
    label_column: str = field(default="label", metadata={"help": "column with the label(s)"})
    multi_label: bool = field(default=False, metadata={"help": "several labels per clip (multi-hot targets)"})
    label_separator: str | None = field(
        default=None, metadata={"help": "separator of several labels in one text cell, e.g. ',' (multi-label)"}
    )
    labels_file: str | None = field(
        default=None,
        metadata={"help": "class list: one label per line, or a CSV with a `label` column, or AudioSet's "
                          "class_labels_indices.csv (mid -> display_name). Default: labels of the training split"},
    )
    label_list: str | None = field(default=None, metadata={"help": "comma-separated class list (fixes the order)"})
    eval_folds: str | None = field(default=None, metadata={"help": "comma-separated folds to evaluate on"})
    cross_validation_folds: str | None = field(
        default=None,
        metadata={"help": "comma-separated folds: one run per fold, evaluated on it and trained on the others "
                          "(ESC-50: 1,2,3,4,5); results are averaged"},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "use a random subset of the eval rows"})
    sample_weights_file: str | None = field(
        default=None,
        metadata={"help": "per-clip sampling weights (AS-2M): one number per training row, or a CSV with the audio "
                          "column and a `weight` column"},
    )
    weighted_sample_size: int | None = field(
        default=None, metadata={"help": "clips drawn (without replacement) per epoch with the sample weights"}
    )
    truncate_samples: int | None = field(
        default=None, metadata={"help": "keep only the first N samples of every train/eval clip (EnvSDD: 64600)"}
    )
    loss: str = field(
        default="auto",
        metadata={"help": "bce (multi-hot targets, sigmoid) | ce (class index, softmax) | auto: bce when multi-label "
                          "or mixup > 0"},
    )
    mixup: float = field(default=0.0, metadata={"help": "probability of waveform mixup per training clip"})
    mixup_alpha: float = field(default=10.0, metadata={"help": "mixup lambda ~ Beta(alpha, alpha)"})
    freqm: int = field(default=0, metadata={"help": "SpecAugment frequency-mask width bound (bins)"})
    timem: int = field(default=0, metadata={"help": "SpecAugment time-mask width bound (frames)"})
    spc_noise: bool = field(default=False, metadata={"help": "Speech Commands noise and +-10 frame shift"})


# ----------------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------------


def read_labels_file(path: str | Path) -> tuple[list[str], list[str]]:
    """(keys as they appear in the data, display names) from a class list file (see `--labels_file`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Labels file {path} does not exist.")
    text = path.read_text(encoding="utf-8").splitlines()
    rows = [line for line in text if line.strip()]
    if not rows:
        raise ValueError(f"Labels file {path} is empty.")
    if path.suffix.lower() == ".csv":
        import csv

        reader = list(csv.DictReader(rows))
        fields = reader[0].keys() if reader else []
        if "mid" in fields and "display_name" in fields:  # AudioSet class_labels_indices.csv
            return [r["mid"] for r in reader], [r["display_name"] for r in reader]
        for name in ("label", "name", "display_name"):
            if name in fields:
                keys = [r[name] for r in reader]
                return keys, keys
        raise ValueError(f"Labels file {path} needs a `label` column (or AudioSet's `mid` and `display_name`).")
    keys = [line.strip() for line in rows]
    return keys, keys


def label_values(value: object, separator: str | None) -> list[str]:
    """The labels of one cell: a list, a separated string, or a single value (numbers become text)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if separator:
        return [part.strip() for part in text.split(separator) if part.strip()]
    return [text] if text else []


@dataclass
class LabelSet:
    keys: list[str]  # as in the data
    names: list[str]  # id2label

    @property
    def key_to_id(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def build_label_set(train_dataset: Dataset, data_args: DataArguments) -> LabelSet:
    if data_args.labels_file:
        keys, names = read_labels_file(data_args.labels_file)
        return LabelSet(keys, names)
    if data_args.label_list:
        keys = [k.strip() for k in data_args.label_list.split(",") if k.strip()]
        return LabelSet(keys, keys)
    feature = train_dataset.features.get(data_args.label_column) if train_dataset.features else None
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    if names:  # ClassLabel (or a sequence of ClassLabel): the data holds indices
        return LabelSet([str(i) for i in range(len(names))], list(names))
    seen = set()
    for value in train_dataset[data_args.label_column]:
        seen.update(label_values(value, data_args.label_separator))
    if not seen:
        raise ValueError(f"The training split has no labels in column `{data_args.label_column}`.")
    numeric = all(key.lstrip("-").isdigit() for key in seen)
    keys = sorted(seen, key=int) if numeric else sorted(seen)
    return LabelSet(keys, keys)


def encode_targets(dataset: Dataset, labels: LabelSet, data_args: DataArguments, split_name: str) -> list[list[int]]:
    """Class indices of every row; unknown or missing labels raise a `ValueError` naming them."""
    key_to_id = labels.key_to_id
    targets, unknown, missing = [], {}, []
    for row, value in enumerate(dataset[data_args.label_column]):
        values = label_values(value, data_args.label_separator)
        if not values and not data_args.multi_label:
            missing.append(row)
        ids = []
        for key in values:
            if key in key_to_id:
                ids.append(key_to_id[key])
            else:
                unknown.setdefault(key, row)
        targets.append(ids)
    if unknown:
        shown = ", ".join(f"{key!r} (row {row})" for key, row in list(unknown.items())[:10])
        raise ValueError(
            f"The {split_name} split has {len(unknown)} label(s) not in the label set of {len(labels.keys)} classes: "
            f"{shown}. The label set comes from "
            f"{data_args.labels_file or data_args.label_list or 'the training split'}; pass --labels_file or "
            "--label_list with every class."
        )
    if missing:
        raise ValueError(
            f"The {split_name} split has {len(missing)} row(s) without a label in `{data_args.label_column}` "
            f"(first rows: {missing[:10]}); single-label training needs one per row."
        )
    return targets


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def load_splits(data_args: DataArguments, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """(train, eval) `datasets.Dataset`s with an undecoded `audio` column; eval is None when nothing selects one.
    Evaluating on some folds of the training source (no --train_folds) trains on the remaining ones."""
    same_source = data_args.eval_dataset is None and data_args.eval_split is None
    train = open_train_split(data_args, seed, exclude_folds=data_args.eval_folds if same_source else None)
    if data_args.label_column not in train.column_names:
        raise ValueError(
            f"{data_args.dataset} has no label column `{data_args.label_column}`; its columns are "
            f"{train.column_names}."
        )
    eval_dataset = None
    if not same_source or data_args.eval_folds is not None:
        source = data_args.eval_dataset or data_args.dataset
        eval_dataset = open_audio_dataset(source, data_args.eval_split or data_args.train_split,
                                          data_args.audio_column, data_args.dataset_config_name)
        eval_dataset = select_folds(eval_dataset, data_args.fold_column, data_args.eval_folds, source, "eval")
        if len(eval_dataset) == 0:
            raise ValueError(f"The eval split of {source} is empty.")
        if data_args.label_column not in eval_dataset.column_names:
            raise ValueError(f"The eval data {source} has no label column `{data_args.label_column}`; its columns "
                             f"are {eval_dataset.column_names}.")
        eval_dataset = subsample(eval_dataset, data_args.max_eval_samples, seed)
    return train, eval_dataset


def read_sample_weights(path: str | Path, dataset: Dataset) -> np.ndarray:
    """Per-row sampling weights: a file with one number per line (in row order, the authors' weight_full.csv), or a
    CSV with a header, a path column and a `weight` column, matched to the rows by path (or a trailing part of it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Sample-weights file {path} does not exist.")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    keyed = None
    if all("," not in line for line in lines):
        try:
            weights = np.asarray([float(line) for line in lines], dtype=np.float64)
        except ValueError as error:
            raise ValueError(f"{path}: expected one weight per line ({error}).") from None
    else:
        import csv

        reader = list(csv.DictReader(lines))
        if not reader or "weight" not in reader[0]:
            raise ValueError(f"{path}: expected one weight per line, or a CSV with a `weight` column.") from None
        key = next((k for k in reader[0] if k != "weight"), None)
        keyed = {r[key].replace("\\", "/"): float(r["weight"]) for r in reader}
    if keyed is not None:
        # Match each clip to the weight row whose path is its path or a trailing part of it (relative paths).
        by_name: dict[str, list[str]] = {}
        for k in keyed:
            by_name.setdefault(k.rsplit("/", 1)[-1], []).append(k)
        weights, missing = [], []
        for value in dataset["audio"]:
            clip = str(value if isinstance(value, str) else (value.get("path") or "")).replace("\\", "/")
            matches = [k for k in by_name.get(clip.rsplit("/", 1)[-1], []) if clip == k or clip.endswith("/" + k)]
            if len(matches) > 1:
                matches = [max(matches, key=len)]
            if not matches:
                missing.append(clip)
                continue
            weights.append(keyed[matches[0]])
        if missing:
            raise ValueError(f"{path} has no weight for {len(missing)} training clip(s), e.g. {missing[:3]}.")
        weights = np.asarray(weights)
    if len(weights) != len(dataset):
        raise ValueError(f"{path} has {len(weights)} weights but the training split has {len(dataset)} rows.")
    if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"{path}: weights must be finite, non-negative and not all zero.")
    return weights


class AudioClassificationDataset(TorchDataset):
    """Decodes clips on the fly; in training applies the authors' waveform augmentations (roll/magnitude, mixup).

    Items: {"waveform": float32 array, "labels": multi-hot float32 vector (BCE) or class index (CE), "augment": bool}.
    """

    def __init__(
        self,
        dataset: Dataset,
        targets: list[list[int]],
        num_labels: int,
        multi_hot: bool,
        sampling_rate: int = 16000,
        truncate_samples: int | None = None,
        train: bool = False,
        mixup: float = 0.0,
        mixup_alpha: float = 10.0,
        roll_magnitude: bool = False,
    ):
        self.dataset = dataset.select_columns(["audio"])
        self.targets = targets
        self.num_labels = num_labels
        self.multi_hot = multi_hot
        self.sampling_rate = sampling_rate
        self.truncate_samples = truncate_samples
        self.train = train
        self.mixup = mixup if train else 0.0
        self.mixup_alpha = mixup_alpha
        self.roll_magnitude = roll_magnitude and train
        if self.mixup > 0 and not multi_hot:
            raise ValueError("mixup produces soft multi-hot targets: use --loss bce (the authors' recipes do).")
        self._rng = None
        self._audio_cache = None

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def rng(self) -> np.random.Generator:
        # Seeded from torch's per-worker seed, so runs are reproducible under `set_seed` and workers differ.
        if self._rng is None:
            self._rng = np.random.default_rng(torch.initial_seed() % 2**32)
        return self._rng

    def load(self, index: int) -> np.ndarray:
        value = self.dataset[index]["audio"]
        try:
            waveform = decode_audio(value, self.sampling_rate)
        except (FileNotFoundError, ValueError) as error:
            raise type(error)(f"Row {index}: {error}") from error
        if self.truncate_samples is not None:
            waveform = waveform[: self.truncate_samples]
        return (waveform - waveform.mean()).astype(np.float32)

    def target_vector(self, index: int) -> np.ndarray:
        vector = np.zeros(self.num_labels, dtype=np.float32)
        vector[self.targets[index]] = 1.0
        return vector

    def __getitem__(self, index: int) -> dict:
        waveform = self.load(index)
        if self.roll_magnitude:
            waveform = roll_and_scale(waveform, self.rng)
        if self.mixup > 0 and self.rng.random() < self.mixup:
            partner = int(self.rng.integers(0, len(self)))
            other = self.load(partner)
            if self.roll_magnitude:
                other = roll_and_scale(other, self.rng)
            if len(other) < len(waveform):
                other = np.pad(other, (0, len(waveform) - len(other)))
            other = other[: len(waveform)]
            lam = float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))
            waveform = lam * waveform + (1 - lam) * other
            waveform = (waveform - waveform.mean()).astype(np.float32)
            labels = lam * self.target_vector(index) + (1 - lam) * self.target_vector(partner)
        elif self.multi_hot:
            labels = self.target_vector(index)
        else:
            labels = self.targets[index][-1]
        return {"waveform": waveform, "labels": labels, "augment": self.train}


class AudioFeatureCollator:
    """Batches waveforms into normalised log-Mel features (one batched feature-extractor call) and, for training
    items, applies SpecAugment and the Speech Commands noise/shift."""

    def __init__(
        self,
        feature_extractor: AudioMosaicFeatureExtractor,
        max_length: int,
        freqm: int = 0,
        timem: int = 0,
        spc_noise: bool = False,
    ):
        self.feature_extractor = feature_extractor
        self.max_length = max_length
        self.freqm = freqm
        self.timem = timem
        self.spc_noise = spc_noise
        fe = feature_extractor
        # SpecAugment fills with 0 in log-Mel units before normalisation in the authors' code.
        self.mask_value = (fe.padding_value - fe.mean) / (2 * fe.std) if fe.do_normalize else fe.padding_value

    def __call__(self, items: list[dict]) -> dict:
        features = self.feature_extractor(
            [item["waveform"] for item in items],
            sampling_rate=self.feature_extractor.sampling_rate,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,  # training crops clips to the model's length, as the authors' loader does
            return_tensors="pt",
        )["input_values"]
        if items[0].get("augment"):
            features = self.augment(features)
        labels = np.stack([np.asarray(item["labels"]) for item in items])
        labels = torch.from_numpy(labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64))
        return {"input_values": features, "labels": labels}

    def augment(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) normalised features -> augmented copy (each clip gets its own masks)."""
        out = []
        num_frames = features.shape[1]
        for clip in features:
            # Frequency band, then time band, as the authors' calls (which draw their widths in this order).
            clip = spec_augment_mask(clip, self.freqm, dim=1, value=self.mask_value)
            clip = spec_augment_mask(clip, min(self.timem, num_frames), dim=0, value=self.mask_value)
            if self.spc_noise:
                clip = clip + torch.rand_like(clip) * float(np.random.rand()) / 10
                clip = torch.roll(clip, int(np.random.randint(-10, 10)), dims=0)
            out.append(clip)
        return torch.stack(out)


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


def parse_class_weights(value: str | list[float] | None) -> list[float] | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(v) for v in str(value).split(",") if v.strip()]


def build_model(
    model_args: ModelArguments,
    labels: LabelSet,
    problem_type: str,
    max_length: int,
) -> AudioMosaicForAudioClassification:
    """A classification model for `labels`: from a checkpoint (any AudioMosaic folder: its encoder and, when the
    label count matches, head are loaded) or a new one; positional embeddings resized to `max_length` frames."""
    head = {
        "classifier_type": model_args.classifier_type,
        "freeze_encoder": model_args.freeze_encoder,
        "mask_time_prob": model_args.mask_time_prob,
        "mask_freq_prob": model_args.mask_freq_prob,
        "classifier_dropout": model_args.classifier_dropout,
        "class_weights": parse_class_weights(model_args.class_weights),
        "num_labels": len(labels.keys),
        "id2label": labels.id2label,
        "label2id": labels.label2id,
        "problem_type": problem_type,
    }
    if model_args.probe_layer is not None:
        head["probe_layer"] = model_args.probe_layer
    if model_args.drop_path_rate is not None:
        head["drop_path_rate"] = model_args.drop_path_rate
    if head["class_weights"] is not None and len(head["class_weights"]) != head["num_labels"]:
        raise ValueError(
            f"--class_weights has {len(head['class_weights'])} values but there are {head['num_labels']} classes "
            f"({labels.keys[:10]})."
        )
    path = model_args.model_name_or_path
    if path:
        config = build_config(path, head)
        model = AudioMosaicForAudioClassification.from_pretrained(path, config=config, ignore_mismatched_sizes=True)
        if model.config.max_length != max_length:
            logger.info(
                "Resizing the positional embeddings from %d to %d frames (%s method).",
                model.config.max_length, max_length, model_args.position_embedding_resize,
            )
            model.audiomosaic.resize_position_embeddings(max_length, method=model_args.position_embedding_resize)
        if model_args.freeze_encoder:
            model.freeze_encoder()
        return model
    overrides = parse_config_overrides(model_args.config_overrides)
    length = {} if model_args.config_name else {"max_length": max_length}
    config = build_config(model_args.config_name, {**length, **overrides, **head})
    if config.max_length < max_length:
        raise ValueError(f"The model's max_length ({config.max_length}) is shorter than --max_length {max_length}.")
    return AudioMosaicForAudioClassification(config)


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The authors' evaluation: multi-hot targets -> mAP, mAUC (sigmoid scores) and argmax accuracy; class indices
    -> top-1 accuracy; two classes -> also EER and AUC of the softmax probability of class 1."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    metrics: dict[str, float] = {}
    if labels.ndim == 2:
        scores = 1 / (1 + np.exp(-logits))
        result = load_metric("mean_average_precision").compute(predictions=scores, references=labels)
        metrics["mAP"], metrics["mAUC"] = result["mAP"], result["mAUC"]
        references = labels.argmax(axis=1)
    else:
        references = labels.astype(np.int64)
    predictions = logits.argmax(axis=1)
    metrics["accuracy"] = load_metric("accuracy").compute(predictions=predictions, references=references)["accuracy"]
    if logits.shape[1] == 2 and len(np.unique(references)) == 2:
        result = load_metric("eer").compute(predictions=_softmax(logits)[:, 1], references=references)
        metrics["eer"], metrics["auc"] = result["eer"], result["auc"]
    return metrics


def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    logits = eval_prediction.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    return classification_metrics(logits, eval_prediction.label_ids)


# ----------------------------------------------------------------------------------------------------------------------
# Preparing a run
# ----------------------------------------------------------------------------------------------------------------------


def resolve_loss(data_args: DataArguments) -> str:
    if data_args.loss not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {data_args.loss!r}.")
    if data_args.loss == "auto":
        return "bce" if data_args.multi_label or data_args.mixup > 0 else "ce"
    if data_args.loss == "ce" and data_args.multi_label:
        raise ValueError("--loss ce needs one label per clip; multi-label data trains with --loss bce.")
    return data_args.loss


@dataclass
class PreparedRun:
    """Everything a run needs, shared by fine-tuning and probing."""

    labels: LabelSet
    loss: str
    feature_extractor: AudioMosaicFeatureExtractor
    max_length: int
    train_hf: object
    eval_hf: object | None
    train_targets: list
    eval_targets: list | None

    def dataset(self, data_args: DataArguments, split: str, augment: bool = True) -> AudioClassificationDataset:
        train = split == "train"
        hf, targets = (self.train_hf, self.train_targets) if train else (self.eval_hf, self.eval_targets)
        return AudioClassificationDataset(
            hf, targets, len(self.labels.keys), multi_hot=self.loss == "bce",
            sampling_rate=data_args.sampling_rate, truncate_samples=data_args.truncate_samples,
            train=train and augment, mixup=data_args.mixup, mixup_alpha=data_args.mixup_alpha,
            roll_magnitude=data_args.roll_magnitude,
        )

    def collator(self, data_args: DataArguments) -> AudioFeatureCollator:
        return AudioFeatureCollator(self.feature_extractor, self.max_length, data_args.freqm, data_args.timem,
                                    data_args.spc_noise)


def prepare(model_args: ModelArguments, data_args: DataArguments, seed: int = 0) -> PreparedRun:
    loss = resolve_loss(data_args)
    train_hf, eval_hf = load_splits(data_args, seed)
    labels = build_label_set(train_hf, data_args)
    train_targets = encode_targets(train_hf, labels, data_args, "train")
    eval_targets = encode_targets(eval_hf, labels, data_args, "eval") if eval_hf is not None else None
    fe = build_feature_extractor(data_args, model_args.model_name_or_path, train_audio=train_hf["audio"]
                                 if data_args.feature_extractor_preset == AUTO_PRESET else None)
    return PreparedRun(labels, loss, fe, fe.max_length, train_hf, eval_hf, train_targets, eval_targets)
