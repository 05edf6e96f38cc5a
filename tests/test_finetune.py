"""training/finetune.py: every recipe loads, builds its model and takes one optimisation step on a tiny model with
real audio; LLRD, blr scaling, augmentations, weighted sampling, positional-embedding resizing and bad-input errors."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicForPreTraining
from modeling_audiomosaic.modeling_audiomosaic import resize_position_embeddings
from audiomosaic_training import classification, finetune
from audiomosaic_training.classification import AudioClassificationDataset, AudioFeatureCollator
from audiomosaic_training.finetune import AudioMosaicTrainer, FinetuneTrainingArguments
from audiomosaic_training.models import parse_config_overrides
from audiomosaic_training.optim import build_optimizer, parameter_groups


RECIPES = Path(finetune.__file__).resolve().parent / "recipes"
FINETUNE_RECIPES = sorted(p.name for p in RECIPES.glob("finetune_*.yaml"))
TINY = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,projection_hidden_size=32,projection_dim=16"
WORDS = ["low", "mid", "high"]


@pytest.fixture(scope="module")
def clips(synthetic_clips, tmp_path_factory) -> Path:
    """A CSV of 12 generated clips (3 classes x 2 per fold, folds 1 and 5) with single-label, multi-label and
    binary label columns; audio paths are absolute, nothing is copied."""
    root = synthetic_clips
    rows = []
    with open(root / "meta.csv") as handle:
        counts = {}
        for row in csv.DictReader(handle):
            key = (row["label"], row["fold"])
            if row["label"] in WORDS and row["fold"] in ("1", "5") and counts.get(key, 0) < 2:
                counts[key] = counts.get(key, 0) + 1
                rows.append(row)
    out_dir = tmp_path_factory.mktemp("clips")
    path = out_dir / "clips.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "label", "labels", "binary", "fold"])
        for i, row in enumerate(rows):
            multi = row["label"] if i % 3 else f"{row['label']},{WORDS[(WORDS.index(row['label']) + 1) % 3]}"
            writer.writerow([str((root / row["filename"]).resolve()), row["label"], multi, int(row["label"] == "low"),
                             row["fold"]])
    assert len(rows) == 12
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny 'pretrained' encoder folder (AudioMosaicForPreTraining, 128 frames) + feature extractor."""
    torch.manual_seed(0)
    config = AudioMosaicConfig(**parse_config_overrides(TINY), max_length=128)
    path = tmp_path_factory.mktemp("tiny_pretrained")
    AudioMosaicForPreTraining(config).save_pretrained(path)
    AudioMosaicFeatureExtractor.from_preset("speechcommands").save_pretrained(path)
    return path


def recipe_argv(recipe: str, clips: Path, checkpoint: Path, output_dir: Path) -> list[str]:
    """Command line for one quick step: the recipe, with local data, a tiny model, 1 s clips and small batches."""
    argv = ["--recipe", str(RECIPES / recipe), "--dataset", str(clips), "--model_name_or_path", str(checkpoint),
            "--output_dir", str(output_dir), "--max_length", "128", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "8", "--max_steps", "1", "--warmup_epochs", "0",
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--dataloader_num_workers", "0", "--use_cpu", "true", "--disable_tqdm", "true"]
    recipe_values = yaml.safe_load((RECIPES / recipe).read_text())
    if recipe_values.get("multi_label"):
        argv += ["--label_column", "labels"]
    elif recipe_values.get("label_list") == "0,1":
        argv += ["--label_column", "binary"]
    if recipe_values.get("cross_validation_folds"):
        argv += ["--cross_validation_folds", "1,5"]
    else:
        argv += ["--fold_column", "fold", "--train_folds", "1", "--eval_folds", "5"]
    if recipe_values.get("sample_weights_file") is None and recipe_values.get("weighted_sample_size"):
        weights = clips.parent / "weights.txt"
        weights.write_text("\n".join(["1.0", "2.0", "0.0"] * 2) + "\n")  # 6 fold-1 rows, 4 with a weight
        argv += ["--sample_weights_file", str(weights), "--weighted_sample_size", "4"]
    return argv


@pytest.mark.parametrize("recipe", FINETUNE_RECIPES)
def test_recipe_takes_one_step(recipe, clips, tiny_checkpoint, tmp_path):
    results = finetune.main(recipe_argv(recipe, clips, tiny_checkpoint, tmp_path))
    recipe_values = yaml.safe_load((RECIPES / recipe).read_text())
    runs = [tmp_path / f"fold_{f}" for f in ("1", "5")] if recipe_values.get("cross_validation_folds") else [tmp_path]
    before = load_file(str(tiny_checkpoint / "model.safetensors"))
    for run_dir in runs:
        saved = json.loads((run_dir / "results.json").read_text())
        assert saved["train"]["global_step"] == 1
        assert math.isfinite(saved["train"]["train_loss"])
        # blr scaling is explicit: lr = blr x batch / 256.
        assert saved["learning_rate"] == pytest.approx(recipe_values["blr"] * 4 / 256)
        after = load_file(str(run_dir / "model.safetensors"))
        key = "audiomosaic.layers.0.mlp.fc1.weight"
        assert not torch.equal(before[key], after[key]), "the encoder did not move in one step"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["classifier_type"] == recipe_values.get("classifier_type", "linear")
        assert config["max_length"] == 128
        assert config["problem_type"] == ("multi_label_classification" if recipe_values["loss"] == "bce"
                                          else "single_label_classification")
        assert config["mask_time_prob"] == recipe_values["mask_time_prob"]
        if "class_weights" in recipe_values:
            assert config["class_weights"] == [0.1, 0.9]
        assert (run_dir / "README.md").is_file()
        # Every eval clip is scored although the recipe drops the last incomplete *training* batch.
        correct = saved["eval"]["accuracy"] * saved["num_eval_examples"]
        assert saved["num_eval_examples"] == 6 and correct == pytest.approx(round(correct))
        assert math.isfinite(saved["eval"]["loss"])
    assert set(results["eval"]) >= {"accuracy"}


def test_every_authors_task_has_a_recipe():
    names = set(FINETUNE_RECIPES)
    assert {"finetune_as20k.yaml", "finetune_as2m.yaml", "finetune_esc50.yaml", "finetune_spc1.yaml",
            "finetune_spc2.yaml", "finetune_envsdd.yaml", "finetune_generic.yaml"} <= names
    as20k = yaml.safe_load((RECIPES / "finetune_as20k.yaml").read_text())
    assert as20k["layer_decay"] == 0.65 and as20k["blr"] == 0.0005  # config, not the paper (spec §11.6)
    assert "0.65" in (RECIPES / "finetune_as20k.yaml").read_text().split("layer_decay")[1].splitlines()[0]
    spc1 = yaml.safe_load((RECIPES / "finetune_spc1.yaml").read_text())
    assert spc1["blr"] == 0.001 and spc1["feature_extractor_preset"] == "speechcommands"
    envsdd = yaml.safe_load((RECIPES / "finetune_envsdd.yaml").read_text())
    assert envsdd["num_train_epochs"] == 20 and envsdd["class_weights"] == "0.1,0.9"


# ---------------------------------------------------------------------------------------------------------------------
# Optimiser
# ---------------------------------------------------------------------------------------------------------------------


def test_layer_wise_lr_decay_groups():
    config = AudioMosaicConfig(**parse_config_overrides(TINY), max_length=128, num_labels=3)
    model = classification.AudioMosaicForAudioClassification(config)
    groups = parameter_groups(model, weight_decay=0.01, layer_decay=0.5)
    by_name = {name: g for g in groups for name in g["param_names"]}
    depth = config.num_hidden_layers
    # layer id 0 -> decay^(depth + 1), block i -> decay^(depth - i), everything else -> 1.
    for name in ("audiomosaic.embeddings.cls_token", "audiomosaic.embeddings.position_embeddings",
                 "audiomosaic.embeddings.patch_embeddings.projection.weight",
                 "audiomosaic.embeddings.patch_embeddings.layernorm.weight"):
        assert by_name[name]["lr_scale"] == 0.5 ** (depth + 1)
    assert by_name["audiomosaic.layers.0.attention.qkv.weight"]["lr_scale"] == 0.5 ** depth
    assert by_name["audiomosaic.layers.1.mlp.fc2.weight"]["lr_scale"] == 0.5 ** (depth - 1)
    for name in ("audiomosaic.embeddings.pre_layernorm.weight", "audiomosaic.fc_norm.weight", "classifier.weight"):
        assert by_name[name]["lr_scale"] == 1.0
    # No weight decay for 1-D tensors, the cls token and the positional embeddings.
    for name in ("audiomosaic.embeddings.cls_token", "audiomosaic.embeddings.position_embeddings",
                 "classifier.bias", "audiomosaic.layers.0.layernorm_before.weight"):
        assert by_name[name]["weight_decay"] == 0.0
    assert by_name["classifier.weight"]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    # Frozen parameters are skipped.
    model.freeze_encoder()
    frozen_groups = parameter_groups(model, 0.01, 0.5)
    assert {n for g in frozen_groups for n in g["param_names"]} == {
        "audiomosaic.fc_norm.weight", "audiomosaic.fc_norm.bias", "classifier.weight", "classifier.bias"}
    everything = build_optimizer(model, 1e-3, 0.01, 0.5, weight_decay_on_all_params=True)
    assert len(everything.param_groups) == 1 and everything.param_groups[0]["weight_decay"] == 0.01


def test_trainer_uses_llrd_and_the_schedule_keeps_the_ratios(tmp_path):
    config = AudioMosaicConfig(**parse_config_overrides(TINY), max_length=128, num_labels=2)
    model = classification.AudioMosaicForAudioClassification(config)
    args = FinetuneTrainingArguments(output_dir=str(tmp_path), blr=1e-3, per_device_train_batch_size=64,
                                     gradient_accumulation_steps=2, layer_decay=0.75, weight_decay=0.05,
                                     warmup_steps=2, min_lr=1e-6, report_to=[], use_cpu=True)
    assert args.learning_rate == pytest.approx(1e-3 * 128 / 256)
    assert args.lr_scheduler_kwargs == {"min_lr": 1e-6}
    trainer = AudioMosaicTrainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    groups = trainer.optimizer.param_groups
    assert trainer.optimizer.defaults["lr"] == pytest.approx(args.learning_rate)
    for _ in range(5):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    top = next(g for g in groups if g["lr_scale"] == 1.0)
    for group in groups:
        assert group["lr"] == pytest.approx(top["lr"] * group["lr_scale"], rel=1e-6)
    for _ in range(5):
        trainer.lr_scheduler.step()
    assert top["lr"] == pytest.approx(1e-6, rel=1e-3)  # cosine ends at min_lr


def test_weighted_sampler_draws_only_weighted_rows(tmp_path):
    config = AudioMosaicConfig(**parse_config_overrides(TINY), max_length=128, num_labels=2)
    args = FinetuneTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    weights = np.array([0.0, 1.0, 0.0, 2.0, 1.0, 0.0])
    trainer = AudioMosaicTrainer(model=classification.AudioMosaicForAudioClassification(config), args=args,
                                 train_dataset=list(range(6)), sample_weights=weights, weighted_sample_size=3)
    sampler = trainer.train_sampler()
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler) and len(sampler) == 3
    for _ in range(5):
        drawn = list(sampler)
        assert sorted(drawn) == [1, 3, 4]  # without replacement, never a zero-weight row


def test_only_the_training_loader_drops_the_last_batch(tmp_path):
    """The authors' `drop_last` applies to training; evaluation sees every clip (Trainer would drop both)."""
    config = AudioMosaicConfig(**parse_config_overrides(TINY), max_length=128, num_labels=2)
    args = FinetuneTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True,
                                     per_device_train_batch_size=4, per_device_eval_batch_size=4)
    items = [{"input_values": torch.zeros(128, 128), "labels": i % 2} for i in range(10)]
    for drop_last, train_clips in ((True, 8), (False, 10)):  # 10 clips in batches of 4
        trainer = AudioMosaicTrainer(model=classification.AudioMosaicForAudioClassification(config), args=args,
                                     train_dataset=items, eval_dataset=items, drop_last=drop_last)
        assert sum(len(b["labels"]) for b in trainer.get_train_dataloader()) == train_clips
        assert sum(len(b["labels"]) for b in trainer.get_eval_dataloader()) == 10
        assert not trainer.args.dataloader_drop_last


def test_sample_weights_file_formats(tmp_path, clips):
    data_args = classification.DataArguments(dataset=str(clips))
    train = classification.open_audio_dataset(str(clips))
    plain = tmp_path / "w.txt"
    plain.write_text("\n".join(str(i) for i in range(len(train))))
    assert classification.read_sample_weights(plain, train).tolist() == list(range(len(train)))
    keyed = tmp_path / "w.csv"
    # Paths relative to the data root, as in meta.csv (file names alone are not unique in Speech Commands).
    names = ["/".join(Path(p).parts[-3:]) for p in train["audio"]]
    keyed.write_text("filename,weight\n" + "\n".join(f"{n},{i + 1}" for i, n in enumerate(reversed(names))))
    assert classification.read_sample_weights(keyed, train).tolist() == list(range(len(train), 0, -1))
    partial = tmp_path / "partial.csv"
    partial.write_text("filename,weight\n" + "\n".join(f"{n},1" for n in names[1:]))
    with pytest.raises(ValueError, match="no weight for 1 training clip"):
        classification.read_sample_weights(partial, train)
    short = tmp_path / "short.txt"
    short.write_text("1\n2\n")
    with pytest.raises(ValueError, match="2 weights but the training split has 12"):
        classification.read_sample_weights(short, train)
    del data_args


# ---------------------------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------------------------


def _dataset(clips, **kwargs) -> AudioClassificationDataset:
    data_args = classification.DataArguments(dataset=str(clips))
    train = classification.open_audio_dataset(str(clips))
    labels = classification.build_label_set(train, data_args)
    targets = classification.encode_targets(train, labels, data_args, "train")
    return AudioClassificationDataset(train, targets, len(labels.keys), **kwargs)


def test_mixup_mixes_waveforms_and_labels(clips):
    torch.manual_seed(0)
    mixed = _dataset(clips, multi_hot=True, train=True, mixup=1.0)
    plain = _dataset(clips, multi_hot=True, train=False, mixup=1.0)
    lambdas = []
    for index in range(len(mixed)):
        item = mixed[index]
        assert item["labels"].sum() == pytest.approx(1.0, abs=1e-6)  # lambda + (1 - lambda) on one-hot targets
        assert abs(float(item["waveform"].mean())) < 1e-5  # re-centred after mixing
        lambdas.append(item["labels"][mixed.targets[index][0]])
        assert plain[index]["labels"].tolist() == np.eye(3)[plain.targets[index][0]].tolist()
    lambdas = np.array(lambdas)
    assert ((lambdas > 0.2) & (lambdas <= 1.0)).all() and lambdas.std() > 0.01  # Beta(10, 10) is ~0.5 +- 0.11
    with pytest.raises(ValueError, match="bce"):
        _dataset(clips, multi_hot=False, train=True, mixup=0.5)


def test_specaugment_and_noise_only_for_training_batches(clips):
    fe = AudioMosaicFeatureExtractor.from_preset("speechcommands")
    dataset = _dataset(clips, multi_hot=False, train=True)
    items = [dataset[i] for i in range(4)]
    clean = AudioFeatureCollator(fe, 128)(items)["input_values"]
    collator = AudioFeatureCollator(fe, 128, freqm=48, timem=48)
    torch.manual_seed(1)
    augmented = collator(items)["input_values"]
    fill = torch.tensor((0 - fe.mean) / (2 * fe.std), dtype=torch.float32)
    changed = augmented != clean
    assert changed.any() and torch.equal(augmented[changed], fill.expand(int(changed.sum())))
    for clip, clip_changed in zip(augmented, changed):
        # Every change lies in a whole frequency column or a whole time row set to the fill value.
        full_cols = (clip == fill).all(dim=0)
        full_rows = (clip == fill).all(dim=1)
        assert not (clip_changed & ~(full_cols[None, :] | full_rows[:, None])).any()
        assert int(full_cols.sum()) < 48
    eval_items = [{**item, "augment": False} for item in items]
    assert torch.equal(collator(eval_items)["input_values"], clean)
    noisy = AudioFeatureCollator(fe, 128, spc_noise=True)(items)["input_values"]
    assert not torch.equal(noisy, clean) and (noisy - clean).abs().mean() < 1.0


def test_specaugment_masks_draw_like_torchaudio():
    """Same seed, same bands as the authors' torchaudio FrequencyMasking(48) then TimeMasking(192) on (1, F, T)."""
    from conftest import import_torchaudio

    from audiomosaic_training.augment import spec_augment_mask

    torchaudio = import_torchaudio()
    clip = torch.randn(1024, 128, generator=torch.Generator().manual_seed(0))
    for seed in range(20):
        torch.manual_seed(seed)
        ours = spec_augment_mask(spec_augment_mask(clip, 48, dim=1, value=-1.5), 192, dim=0, value=-1.5)
        torch.manual_seed(seed)
        spec = torchaudio.transforms.FrequencyMasking(48)(clip.T.unsqueeze(0), -1.5)
        reference = torchaudio.transforms.TimeMasking(192)(spec, -1.5).squeeze(0).T
        assert torch.equal(ours, reference)


# ---------------------------------------------------------------------------------------------------------------------
# Model building
# ---------------------------------------------------------------------------------------------------------------------


def test_positional_embeddings_resized_from_a_longer_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = AudioMosaicConfig(**parse_config_overrides(TINY), max_length=256)
    AudioMosaicForPreTraining(config).save_pretrained(tmp_path / "ckpt")
    original = load_file(str(tmp_path / "ckpt" / "model.safetensors"))["audiomosaic.embeddings.position_embeddings"]
    labels = classification.LabelSet(["a", "b"], ["a", "b"])
    model_args = classification.ModelArguments(model_name_or_path=str(tmp_path / "ckpt"))
    model = classification.build_model(model_args, labels, "single_label_classification", max_length=128)
    table = model.audiomosaic.embeddings.position_embeddings
    assert table.shape == (1, 1 + 8 * 8, 32) and model.config.max_length == 128
    assert torch.equal(table.data, resize_position_embeddings(original, 8, 8, "official"))
    assert model(torch.randn(2, 128, 128)).logits.shape == (2, 2)
    # The encoder weights come from the checkpoint, the head is new.
    encoder_key = "audiomosaic.layers.1.attention.qkv.weight"
    assert torch.equal(model.state_dict()[encoder_key],
                       load_file(str(tmp_path / "ckpt" / "model.safetensors"))[encoder_key])


def test_freeze_encoder_survives_loading(tiny_checkpoint):
    labels = classification.LabelSet(["a", "b", "c"], ["a", "b", "c"])
    model_args = classification.ModelArguments(model_name_or_path=str(tiny_checkpoint), freeze_encoder=True)
    model = classification.build_model(model_args, labels, "single_label_classification", max_length=128)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"audiomosaic.fc_norm.weight", "audiomosaic.fc_norm.bias", "classifier.weight",
                         "classifier.bias"}


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------


def _quick_argv(clips, checkpoint, tmp_path, *extra) -> list[str]:
    return ["--dataset", str(clips), "--model_name_or_path", str(checkpoint), "--output_dir", str(tmp_path),
            "--max_length", "128", "--per_device_train_batch_size", "4", "--max_steps", "1", "--use_cpu", "true",
            "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", *extra]


def test_unknown_recipe_key(tmp_path, clips, tiny_checkpoint):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("blr: 0.001\nlayer_decy: 0.75\n")
    with pytest.raises(ValueError, match="layer_decy"):
        finetune.main(["--recipe", str(recipe), *_quick_argv(clips, tiny_checkpoint, tmp_path)])


def test_empty_split_after_fold_filtering(tmp_path, clips, tiny_checkpoint):
    with pytest.raises(ValueError, match=r"empty after keeping fold\(s\) 9 .*folds present are \['1', '5'\]"):
        finetune.main(_quick_argv(clips, tiny_checkpoint, tmp_path, "--fold_column", "fold", "--train_folds", "9"))
    with pytest.raises(ValueError, match="no fold column `split`"):
        finetune.main(_quick_argv(clips, tiny_checkpoint, tmp_path, "--fold_column", "split", "--eval_folds", "5"))


def test_labels_outside_the_label_set(tmp_path, clips, tiny_checkpoint):
    relabelled = tmp_path / "relabelled.csv"
    rows = list(csv.reader(clips.open()))
    for row in rows[1:]:
        if row[4] == "5" and row[1] == "high":
            row[1] = "other"  # a label the training folds never saw
    with relabelled.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(ValueError, match=r"eval split has 1 label\(s\) not in the label set of 3 classes: 'other'"):
        finetune.main(_quick_argv(relabelled, tiny_checkpoint, tmp_path, "--fold_column", "fold", "--eval_folds", "5"))
    with pytest.raises(ValueError, match=r"train split has 1 label\(s\) not in the label set of 2 classes: 'high'"):
        finetune.main(_quick_argv(clips, tiny_checkpoint, tmp_path, "--label_list", "low,mid"))


def test_missing_files(tmp_path, clips, tiny_checkpoint):
    with pytest.raises(FileNotFoundError, match="does_not_exist.csv"):
        finetune.main(_quick_argv(tmp_path / "does_not_exist.csv", tiny_checkpoint, tmp_path))
    with pytest.raises(FileNotFoundError, match="no_model"):
        finetune.main(_quick_argv(clips, tmp_path / "no_model", tmp_path))
    broken = tmp_path / "broken.csv"
    lines = clips.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[0], str(tmp_path / "gone.flac"))
    broken.write_text("\n".join(lines) + "\n")
    dataset = _dataset(broken, multi_hot=False)
    with pytest.raises(FileNotFoundError, match="Row 2: .*gone.flac"):
        dataset[2]
    with pytest.raises(ValueError, match="--class_weights has 2 values but there are 3 classes"):
        finetune.main(_quick_argv(clips, tiny_checkpoint, tmp_path, "--class_weights", "0.1,0.9"))
