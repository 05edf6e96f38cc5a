"""The authors' Hugging Face releases (`hanxunh/AudioMosaic-vit-b16-*`): what each one is, so that a conversion can
fill in what the release folder does not say (labels, problem type, head type) and its model card can say how it was
trained and what the authors report for it.

Reported scores are the authors' (README of `HanxunH/AudioMosaic`, "Pretrained checkpoints"); nothing here was
re-measured. Training settings are the authors' configs (`configs/AudioMosaic/*.yaml`, spec §6-7).
"""

from dataclasses import dataclass
from importlib import resources


HUB_NAMESPACE = "hanxunh"
AUTHORS_SOURCE = "https://github.com/HanxunH/AudioMosaic#pretrained-checkpoints"


@dataclass(frozen=True)
class Release:
    name: str
    task: str
    dataset: str
    training: str
    labels_file: str | None = None  # file in modeling_audiomosaic/labels/, None: unknown order (generic names)
    problem_type: str | None = None  # None for the pretrained encoder
    classifier_type: str | None = None
    preset: str = "audioset"  # normalisation and length (feature extractor preset)
    reported: str | None = None  # the authors' reported score, with its metric

    @property
    def repo_id(self) -> str:
        return f"{HUB_NAMESPACE}/{self.name}"


_MULTI, _SINGLE = "multi_label_classification", "single_label_classification"
_FINETUNE = "Fine-tuned end to end from the pretrained encoder ({}), AdamW with layer-wise LR decay, cosine schedule."


def _esc(split: int, accuracy: str) -> Release:
    return Release(
        f"AudioMosaic-vit-b16-finetune-esc-split{split}", "ESC-50 environmental sound classification (50 classes)",
        "ESC-50", _FINETUNE.format(f"`finetune_esc_split{split}.yaml`: 512 frames, 60 epochs, cross-entropy, "
                                   f"fold {split} held out"),
        "esc50.csv", _SINGLE, "linear", "esc50", f"accuracy {accuracy} % (fold {split})")


RELEASES: dict[str, Release] = {release.name: release for release in [
    Release("AudioMosaic-vit-b16-pretrained", "self-supervised audio encoder (no classification head)",
            "AudioSet-2M", "Pretrained on AudioSet-2M with time/frequency-masked views and the NT-Xent loss "
                           "(`pretrain.yaml`: 400 epochs, 1024 frames)."),
    Release("AudioMosaic-vit-b16-finetune-as20k", "AudioSet tagging (527 classes, multi-label)", "AudioSet-20K",
            _FINETUNE.format("`finetune_as20k.yaml`: 60 epochs, BCE, mixup 0.8, SpecAugment"),
            "audioset.csv", _MULTI, "linear", "audioset", "mAP 42.53 (AudioSet eval)"),
    Release("AudioMosaic-vit-b16-finetune-as2m", "AudioSet tagging (527 classes, multi-label)", "AudioSet-2M",
            _FINETUNE.format("`finetune_as2m.yaml`: 100 epochs, BCE, weighted sampling of 200k clips per epoch"),
            "audioset.csv", _MULTI, "linear", "audioset", "mAP 50.19 (AudioSet eval)"),
    Release("AudioMosaic-vit-b16-finetune-spc1", "Speech Commands V1 keyword spotting (10 commands + unknown)",
            "Speech Commands V1", _FINETUNE.format("`finetune_spc1.yaml`: 128 frames, 100 epochs, BCE on multi-hot "
                                                   "labels with mixup 0.8"),
            "speechcommands_v1.csv", _MULTI, "linear", "speechcommands", "accuracy 99.03 % (V1 test)"),
    Release("AudioMosaic-vit-b16-finetune-spc2", "Speech Commands V2 keyword spotting (35 words)",
            "Speech Commands V2", _FINETUNE.format("`finetune_spc2.yaml`: 128 frames, 200 epochs, BCE on multi-hot "
                                                   "labels with mixup 0.8"),
            "speechcommands_v2.csv", _MULTI, "linear", "speechcommands", "accuracy 98.34 % (V2 test)"),
    *(_esc(split, accuracy) for split, accuracy in enumerate(("97.25", "98.75", "97.00", "98.50", "95.75"), 1)),
    Release("AudioMosaic-vit-b16-finetune-envsdd-ata", "EnvSDD environmental sound deepfake detection (2 classes)",
            "EnvSDD (ATA)", _FINETUNE.format("`finetune_envsdd_ata.yaml`: 20 epochs, cross-entropy with class "
                                             "weights 0.1 / 0.9, first 4.04 s of each clip"),
            None, _SINGLE, "linear", "audioset", "EER 0.00 / 0.00 / 0.30 / 0.30 % (test01-04)"),
    Release("AudioMosaic-vit-b16-finetune-envsdd-tta", "EnvSDD environmental sound deepfake detection (2 classes)",
            "EnvSDD (TTA)", _FINETUNE.format("`finetune_envsdd_tta.yaml`: 20 epochs, cross-entropy with class "
                                             "weights 0.1 / 0.9, first 4.04 s of each clip"),
            None, _SINGLE, "linear", "audioset", "EER 0.00 / 0.06 / 0.37 / 4.50 % (test01-04)"),
    Release("AudioMosaic-vit-b16-linear-prob-as20k", "AudioSet tagging (527 classes), linear probe",
            "AudioSet-20K", "Linear probe on the frozen pretrained encoder: only `fc_norm` and the head trained "
                            "(`linear_prob_as20k.yaml`: 60 epochs, BCE, weight decay 0).",
            "audioset.csv", _MULTI, "linear", "audioset", "mAP 29.40 (AudioSet eval, linear probe)"),
    Release("AudioMosaic-vit-b16-linear-prob-as20k-attentive", "AudioSet tagging (527 classes), attentive probe",
            "AudioSet-20K", "Attentive probe over the 13 layer outputs of the frozen pretrained encoder "
                            "(`linear_prob_as20k_attentive.yaml`: 60 epochs, BCE).",
            "audioset.csv", _MULTI, "attentive_probe", "audioset", "mAP 33.55 (AudioSet eval, attentive probe)"),
]}


def release_for(source: str) -> Release | None:
    """The release a Hub id or folder name (`hanxunh/AudioMosaic-vit-b16-finetune-as20k`, or its last part) names."""
    return RELEASES.get(source.rstrip("/").split("/")[-1])


def labels_file(release: Release):
    """The release's label CSV (package data), or None when the authors' class order is not known."""
    if release.labels_file is None:
        return None
    return resources.files("modeling_audiomosaic") / "labels" / release.labels_file
