"""Contrastive pretraining script (`training/pretrain.py`): recipes and argument errors, optimiser groups and
schedule, gradient checkpointing of the first 70 % of the blocks, the two-view pipeline and its reproducibility,
skipping of unreadable clips and of non-finite steps, data-parallel equality with one process (2 gloo processes), and
exact resumption after SIGKILL."""

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file

import modeling_audiomosaic  # noqa: F401 - registers the Auto classes
from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicForPreTraining
from audiomosaic_training import pretrain, two_view_data
from audiomosaic_training.data import open_train_split
from audiomosaic_training.models import build_feature_extractor
from audiomosaic_training.optim import build_optimizer, parameter_groups, warmup_cosine_schedule
from modeling_audiomosaic import cli
from modeling_audiomosaic import modeling_audiomosaic as modeling
from audiomosaic_training.augment import TwoViewTransform, build_augmentation


ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "training" / "recipes"
DRAW_VIEW_MASKS = modeling.pretraining_view_keep_indices  # kept before any test replaces it


def tiny_config(**overrides) -> AudioMosaicConfig:
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=32,
                  drop_path_rate=0.0, projection_hidden_size=32, projection_dim=16)
    values.update(overrides)
    return AudioMosaicConfig(**values)


def _reset_accelerate_state() -> None:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture
def accelerator():
    """A CPU Accelerator for in-process steps; its process-wide state is reset afterwards for other tests."""
    from accelerate import Accelerator

    yield Accelerator(cpu=True)
    _reset_accelerate_state()


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate's state is process-wide: a run that picks its own precision needs it reset before and after."""
    _reset_accelerate_state()
    yield
    _reset_accelerate_state()


@pytest.fixture(scope="module")
def clip_list(tmp_path_factory, synthetic_clips) -> Path:
    """A CSV of 24 generated clips of every class (absolute paths)."""
    data = synthetic_clips
    with open(data / "meta.csv") as handle:
        rows = list(csv.DictReader(handle))
    path = tmp_path_factory.mktemp("clips") / "clips.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "fold"])
        for row in rows[:: len(rows) // 24][:24]:
            writer.writerow([str(data / row["filename"]), row["fold"]])
    return path


def args_for(recipe: str, *extra: str):
    return pretrain.parse_args(["--recipe", str(RECIPES / recipe), "--dataset", "x.csv", "--output_dir", "out", *extra])


# ----------------------------------------------------------------------------------------------------------------------
# Recipes and argument errors
# ----------------------------------------------------------------------------------------------------------------------


def test_released_recipe_matches_the_official_configuration():
    model_args, data_args, args = args_for("pretrain_audioset_vitb.yaml")
    config = pretrain.build_pretraining_config(model_args, data_args.max_length)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.max_length) == (
        768, 12, 12, 1024)
    assert (config.temperature, config.projector_norm, config.pretraining_masking) == (0.1, "batch_norm", "official")
    assert (config.mask_ratio_time, config.mask_ratio_freq, config.drop_path_rate) == (0.6, 0.4, 0.1)
    assert (args.per_device_train_batch_size, args.learning_rate, args.weight_decay) == (512, 6e-4, 0.05)
    assert (args.num_train_epochs, args.warmup_epochs, args.min_lr, args.mixed_precision) == (
        400, 1, 1e-6, "bf16")
    assert model_args.gradient_checkpointing_fraction == 0.7 and model_args.sync_batchnorm
    assert (data_args.feature_extractor_preset, data_args.augmentation, data_args.roll_magnitude) == (
        "audioset", "official", True)


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("pretrain_*.yaml")))
def test_every_pretraining_recipe_parses_and_builds(recipe):
    model_args, data_args, args = args_for(recipe)
    config = pretrain.build_pretraining_config(model_args, data_args.max_length)
    assert config.max_length % config.patch_size == 0
    assert build_feature_extractor(data_args, max_length=config.max_length).max_length == config.max_length


TINY_MODEL = ["--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size",
              "64", "--projection_hidden_size", "32", "--projection_dim", "16", "--max_length", "128"]


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("pretrain_*.yaml")))
def test_every_pretraining_recipe_runs_one_step(recipe, clip_list, tmp_path, fresh_accelerate_state):
    """Each shipped recipe as it is (augmentation, precision, checkpointing, schedule) on a tiny encoder: one step.
    The recipes' `torch_threads` holds for the run only."""
    threads = torch.get_num_threads()
    state = pretrain.main(["--recipe", recipe, "--dataset", str(clip_list), "--output_dir", str(tmp_path), *TINY_MODEL,
                           "--max_steps", "1", "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0",
                           "--disable_tqdm", "--probe_size", "0"])
    assert state.global_step == 1 and state.nonfinite_steps == 0
    assert json.loads((tmp_path / "pretrain_state.json").read_text())["global_step"] == 1
    assert torch.get_num_threads() == threads


def test_command_line_overrides_the_recipe():
    model_args, _, args = args_for("pretrain_tiny_cpu.yaml", "--hidden_size", "32", "--learning_rate", "0.01")
    assert model_args.hidden_size == 32 and args.learning_rate == 0.01


def test_unknown_recipe_key_is_an_error(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("hidden_size: 64\nlearning_rte: 0.1\n")
    with pytest.raises(ValueError, match="learning_rte"):
        pretrain.parse_args(["--recipe", str(recipe), "--dataset", "x.csv", "--output_dir", "out"])


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="augmentation"):
        args_for("pretrain_tiny_cpu.yaml", "--augmentation", "aug3")
    with pytest.raises(ValueError, match="max_steps"):
        pretrain.check_args(*args_for("pretrain_tiny_cpu.yaml", "--streaming", "--max_steps", "-1")[1:])
    with pytest.raises(ValueError, match="config_overrides"):
        pretrain.build_pretraining_config(pretrain.ModelArguments(config_overrides="no_such_field=1"))
    with pytest.raises(ValueError, match="pretraining_masking"):
        pretrain.build_pretraining_config(pretrain.ModelArguments(pretraining_masking="diagonal"))


def test_renamed_arguments_are_accepted_with_a_deprecation_warning(tmp_path, caplog):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("feature_preset: speechcommands\nmin_learning_rate: 0.001\nfilter_column: fold\n")
    with caplog.at_level("WARNING", logger="audiomosaic.arguments"):
        _, data_args, args = pretrain.parse_args(["--recipe", str(recipe), "--dataset", "x.csv", "--output_dir", "o",
                                                  "--filter_values=1,2", "--no_roll_mag_aug"])
    assert (data_args.feature_extractor_preset, args.min_lr) == ("speechcommands", 0.001)
    assert (data_args.fold_column, data_args.train_folds, data_args.roll_magnitude) == ("fold", "1,2", False)
    warned = {name for name in ("feature_preset", "min_learning_rate", "filter_column", "filter_values",
                                "roll_mag_aug") if f"`{name}` is deprecated" in caplog.text}
    assert warned == {"feature_preset", "min_learning_rate", "filter_column", "filter_values", "roll_mag_aug"}
    both = tmp_path / "both.yaml"
    both.write_text("min_lr: 0.1\nmin_learning_rate: 0.2\n")
    with pytest.raises(ValueError, match="both `min_learning_rate` and its new name `min_lr`"):
        pretrain.parse_args(["--recipe", str(both), "--dataset", "x.csv", "--output_dir", "o"])


def test_missing_source_and_empty_selection_are_clear_errors(clip_list, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_train_split(pretrain.DataArguments(dataset=str(tmp_path / "missing.csv")))
    with pytest.raises(ValueError, match="empty after keeping fold.s. 9 of column `fold`"):
        open_train_split(pretrain.DataArguments(dataset=str(clip_list), fold_column="fold", train_folds="9"))
    with pytest.raises(ValueError, match="has no fold column `speaker`"):
        open_train_split(pretrain.DataArguments(dataset=str(clip_list), fold_column="speaker", train_folds="1"))


def test_continue_from_an_exported_encoder(tmp_path):
    from modeling_audiomosaic import AudioMosaicModel

    encoder = AudioMosaicModel(tiny_config())
    encoder.save_pretrained(tmp_path)
    model = pretrain.build_model(pretrain.ModelArguments(model_name_or_path=str(tmp_path), temperature=0.2))
    assert model.config.temperature == 0.2 and model.config.hidden_size == 32
    expected = encoder.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.audiomosaic.state_dict().items())


# ----------------------------------------------------------------------------------------------------------------------
# Optimiser, schedule, checkpointing of activations, effective rank
# ----------------------------------------------------------------------------------------------------------------------


def test_weight_decay_groups():
    model = AudioMosaicForPreTraining(tiny_config())
    groups = parameter_groups(model, 0.05)
    assert len(groups) == 2 and all(group["lr_scale"] == 1.0 for group in groups)
    decay, no_decay = sorted(groups, key=lambda group: -group["weight_decay"])
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert "audiomosaic.embeddings.cls_token" in no_decay_names
    assert "audiomosaic.embeddings.position_embeddings" in no_decay_names
    assert all(model.get_parameter(n).ndim >= 2 for n in decay_names)
    assert all(model.get_parameter(n).ndim <= 1 or "token" in n or "position" in n for n in no_decay_names)
    # The projector's last BatchNorm bias is frozen by design and stays out of the optimizer.
    assert "projector.norm_out.bias" not in decay_names | no_decay_names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay_names | no_decay_names == trainable and not decay_names & no_decay_names


def test_learning_rate_schedule():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=6e-4)
    scheduler = warmup_cosine_schedule(optimizer, 10, 100, 1e-6)
    lrs = []
    for _ in range(101):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and math.isclose(lrs[5], 3e-4) and math.isclose(lrs[10], 6e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert math.isclose(lrs[55], (6e-4 + 1e-6) / 2) and math.isclose(lrs[100], 1e-6)


def test_gradient_checkpointing_covers_the_first_70_percent_and_keeps_gradients():
    config = tiny_config(num_hidden_layers=10, pretraining_masking="official", max_length=128)
    torch.manual_seed(0)
    reference = AudioMosaicForPreTraining(config)
    checkpointed = AudioMosaicForPreTraining(config)
    checkpointed.load_state_dict(reference.state_dict())
    flags = pretrain.configure_gradient_checkpointing(checkpointed, 0.7)
    assert flags == [True] * 7 + [False] * 3
    calls = [0] * 10
    for i, layer in enumerate(checkpointed.audiomosaic.layers):
        # (Counted by wrapping `forward`: module hooks do not fire when a block is recomputed.)
        def counting(hidden_states, i=i, forward=layer.mlp.forward):
            calls[i] += 1
            return forward(hidden_states)

        layer.mlp.forward = counting
    inputs = torch.randn(4, 128, 128)
    grads = []
    for model in (reference, checkpointed):
        model.train()
        torch.manual_seed(1)  # the same view masks for both
        model(inputs).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    # Two forward passes (one view each); a checkpointed block runs its MLP again in backward.
    assert calls == [4] * 7 + [2] * 3
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6)
    assert pretrain.configure_gradient_checkpointing(AudioMosaicForPreTraining(config), 0.0) == [False] * 10


def test_effective_rank():
    assert math.isclose(pretrain.effective_rank(torch.eye(16)), 16, rel_tol=1e-4)
    line = torch.randn(64, 1) @ torch.randn(1, 32)
    assert pretrain.effective_rank(line) < 1.01
    assert 20 < pretrain.effective_rank(torch.randn(256, 32)) <= 32


# ----------------------------------------------------------------------------------------------------------------------
# Data pipeline
# ----------------------------------------------------------------------------------------------------------------------


def test_augmentation_recipes_of_table_9():
    names = lambda recipe, **kw: [type(t).__name__ for t in build_augmentation(recipe, **kw).transforms]  # noqa: E731
    full = ["PolarityInversion", "TimeStretch", "AddGaussianSNR", "Gain", "HighPassFilter", "BandStopFilter",
            "PitchShift"]
    assert names("official") == full and names("paper") == full
    assert names("aug6") == full[:6] and names("aug4") == full[:4] and names("aug2") == full[:2]
    assert build_augmentation("none") is None
    assert build_augmentation("official").transforms[1].max_rate == 1.3
    assert build_augmentation("paper").transforms[1].max_rate == 1.25
    assert build_augmentation("official", time_stretch_max_rate=1.25).transforms[1].max_rate == 1.25
    with pytest.raises(ValueError, match="Unknown augmentation"):
        build_augmentation("aug5")



def test_ablation_recipes_leave_transforms_out_on_both_backends():
    from audiomosaic_training.spectral_augment import SpectralTwoViewTransform

    names = [type(t).__name__ for t in build_augmentation("official-pitch-highpass").transforms]
    assert names == ["PolarityInversion", "TimeStretch", "AddGaussianSNR", "Gain", "BandStopFilter"]
    assert build_augmentation("paper-stretch").transforms[0].__class__.__name__ == "PolarityInversion"
    assert [type(t).__name__ for t in build_augmentation("paper-pitch").transforms][1] == "TimeStretch"
    assert build_augmentation("paper-pitch").transforms[1].max_rate == 1.25  # the base recipe's rate
    spectral = SpectralTwoViewTransform(AudioMosaicFeatureExtractor.from_preset("speechcommands"), "official-stretch")
    assert "stretch" not in spectral.probabilities and "pitch" in spectral.probabilities
    # A left-out transform never applies: every view keeps rate 1 however the draws fall.
    parameters = spectral.chain_parameters(torch.zeros(8, 16, dtype=torch.float64), torch.zeros(8, dtype=torch.int64),
                                           torch.zeros(8, dtype=torch.int64), torch.ones(8, dtype=torch.float64))
    assert torch.all(parameters.rate == 1.0) and torch.all(parameters.semitones != 0.0)
    with pytest.raises(ValueError, match="does not have"):
        build_augmentation("aug2-pitch")
    with pytest.raises(ValueError, match="--augmentation"):
        args_for("pretrain_tiny_cpu.yaml", "--augmentation", "official-reverb")

def test_two_views_are_reproducible_from_the_seed():
    extractor = AudioMosaicFeatureExtractor.from_preset("speechcommands")
    transform = TwoViewTransform(extractor, "official")
    waveform = (np.sin(np.arange(16000) * 0.05) * 0.3 + np.random.default_rng(0).normal(0, 0.01, 16000)).astype(
        np.float32)
    view0, view1 = transform(waveform, seed=123)
    assert view0.shape == view1.shape == (128, 128)
    again = transform(waveform, seed=123)
    assert torch.equal(view0, again[0]) and torch.equal(view1, again[1])
    assert not torch.equal(view0, view1)
    assert not torch.equal(view0, transform(waveform, seed=124)[0])
    # Without any augmentation both views are the clip's features.
    plain = TwoViewTransform(extractor, "none", roll_magnitude=False)
    view0, view1 = plain(waveform, seed=5)
    assert torch.equal(view0, view1) and torch.allclose(view0, plain.features(waveform))


def test_epoch_batches_split_each_global_batch_over_processes():
    single = two_view_data.epoch_batches(50, epoch=3, seed=7, per_device_batch=8, num_processes=1, process_index=0)
    ranks = [two_view_data.epoch_batches(50, 3, 7, 4, 2, r) for r in range(2)]
    assert len(single) == len(ranks[0]) == 6  # drop_last: 50 // 8
    for b in range(6):
        assert ranks[0][b] + ranks[1][b] == single[b]
    assert two_view_data.epoch_batches(50, 4, 7, 8, 1, 0) != single


@pytest.mark.parametrize("backend", ["waveform", "spectral"])
def test_unreadable_clips_are_replaced_logged_and_bounded(tmp_path, backend):
    rng = np.random.default_rng(0)
    for i in range(3):
        soundfile.write(tmp_path / f"good{i}.flac", rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
    (tmp_path / "bad.flac").write_bytes(b"not audio at all")
    files = ["good0.flac", "bad.flac", "good1.flac", "good2.flac"]
    (tmp_path / "list.csv").write_text("audio\n" + "\n".join(files) + "\n")
    data_args = pretrain.DataArguments(dataset=str(tmp_path / "list.csv"), augmentation="aug2",
                                       augmentation_backend=backend)
    raw = open_train_split(data_args)
    extractor = AudioMosaicFeatureExtractor.from_preset("speechcommands", max_length=64)
    views = pretrain.build_views(data_args, extractor, torch.device("cpu"))
    dataset = two_view_data.TwoViewDataset(raw, views, 16000, seed=0, max_retries=3)
    item = dataset[(0, 1)]
    assert item["index"] == 2 and len(item["failures"]) == 1 and item["failures"][0]["name"].endswith("bad.flac")
    batch = dataset.collate([dataset[(0, i)] for i in range(4)])
    assert batch["input_values"].shape == batch["input_values_view1"].shape == (4, 64, 128)
    assert len(batch["failures"]) == 1
    # The known-bad file is not decoded again but still counted; a source with nothing readable stops.
    assert len(dataset[(1, 1)]["failures"]) == 1
    (tmp_path / "bad.csv").write_text("audio\nbad.flac\nbad.flac\n")
    broken = two_view_data.TwoViewDataset(open_train_split(pretrain.DataArguments(
        dataset=str(tmp_path / "bad.csv"))), views, 16000, seed=0, max_retries=3)
    with pytest.raises(RuntimeError, match="3 clips in a row could not be read"):
        broken[(0, 0)]


def test_spectral_views_are_made_where_the_model_trains():
    """On CPU the worker that collates a batch renders its views; for a GPU run the workers only decode: the batch
    carries one padded waveform tensor with its lengths and seeds, and its views are made on the device."""
    data_args = pretrain.DataArguments(dataset="x", augmentation="official", augmentation_backend="spectral")
    extractor = AudioMosaicFeatureExtractor.from_preset("speechcommands", max_length=64)
    rng = np.random.default_rng(1)
    items = [{"waveform": rng.normal(0, 0.1, 8000 + 800 * i).astype(np.float32), "seed": i} for i in range(3)]
    on_cpu = pretrain.build_views(data_args, extractor, torch.device("cpu"))
    rendered = on_cpu.collate(items)
    assert rendered["input_values"].shape == (3, 64, 128) and not torch.equal(rendered["input_values"],
                                                                                rendered["input_values_view1"])
    assert on_cpu.make_views(rendered) is rendered
    on_device = pretrain.build_views(data_args, extractor, torch.device("meta"))
    deferred = on_device.collate(items)
    assert set(deferred) == {"waveforms", "lengths", "seeds"}
    assert deferred["waveforms"].shape == (3, 8000 + 1600) and deferred["lengths"].tolist() == [8000, 8800, 9600]
    made = on_device.make_views(dict(deferred))
    expected = on_device.transform.views_from_batch(deferred["waveforms"], deferred["lengths"], deferred["seeds"])
    assert torch.equal(made["input_values"], expected[0]) and torch.equal(made["input_values_view1"], expected[1])
    assert made["input_values"].shape == rendered["input_values"].shape
    with pytest.raises(ValueError, match="--augmentation_backend must be one of"):
        pretrain.DataArguments(dataset="x", augmentation_backend="fft")
    with pytest.raises(ValueError, match="non-finite"):
        on_cpu.item(np.array([0.0, np.nan] * 400, dtype=np.float32), 0)


def test_spectral_backend_run_is_reproducible_across_worker_counts(clip_list, tmp_path, fresh_accelerate_state):
    """The spectral views depend on the clip seeds only: 0 or 1 DataLoader worker, the same weights after 3 steps."""
    weights = []
    for workers in (0, 1):
        state = pretrain.main(["--recipe", "pretrain_tiny_cpu", "--dataset", str(clip_list), "--output_dir",
                               str(tmp_path / str(workers)), "--augmentation", "official", "--augmentation_backend",
                               "spectral", "--max_steps", "3", "--dataloader_num_workers", str(workers),
                               "--disable_tqdm", "--probe_size", "0", "--torch_threads", "1"])
        assert state.global_step == 3 and state.nonfinite_steps == 0
        weights.append(load_file(tmp_path / str(workers) / "model.safetensors"))
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


# ----------------------------------------------------------------------------------------------------------------------
# Steps and runs
# ----------------------------------------------------------------------------------------------------------------------


def test_non_finite_loss_skips_the_step(accelerator):
    model = AudioMosaicForPreTraining(tiny_config())
    optimizer = build_optimizer(model, 1e-3, 0.05)
    model, optimizer = accelerator.prepare(model, optimizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = torch.randn(4, 32, 128)
    inputs[0, 0, 0] = float("nan")
    result = pretrain.training_step(accelerator, model, optimizer, {"input_values": inputs,
                                                                     "input_values_view1": inputs})
    assert not result["applied"] and math.isnan(result["loss"]) and math.isnan(result["grad_norm"])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    result = pretrain.training_step(accelerator, model, optimizer, {"input_values": torch.randn(4, 32, 128),
                                                                     "input_values_view1": torch.randn(4, 32, 128)})
    assert result["applied"] and not all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_repeated_non_finite_losses_stop_the_run(clip_list, tmp_path, monkeypatch, accelerator):
    def always_nan(accelerator, model, batch, timer=None):
        return {"loss": float("nan"), "contrastive_accuracy": 0.0, "finite": False}

    monkeypatch.setattr(pretrain, "compute_gradients", always_nan)
    argv = ["--recipe", str(RECIPES / "pretrain_tiny_cpu.yaml"), "--dataset", str(clip_list), "--output_dir",
            str(tmp_path / "run"), "--max_consecutive_nonfinite", "3", "--dataloader_num_workers", "0",
            "--disable_tqdm", "--probe_size", "0"]
    with pytest.raises(RuntimeError, match="Stopping: 3 steps in a row"):
        pretrain.main(argv)


@pytest.mark.parametrize("backend", ["waveform", "spectral"])
def test_streamed_source_runs(clip_list, tmp_path, accelerator, backend):
    state = pretrain.main(["--recipe", str(RECIPES / "pretrain_tiny_cpu.yaml"), "--dataset", str(clip_list),
                           "--output_dir", str(tmp_path / "run"), "--streaming", "--max_steps", "4",
                           "--warmup_steps", "1", "--shuffle_buffer_size", "8", "--dataloader_num_workers", "0",
                           "--disable_tqdm", "--save_steps", "2", "--augmentation_backend", backend])
    # 24 clips in batches of 8: the stream runs dry after 3 steps and the 4th comes from the next epoch.
    assert state.global_step == 4 and state.epoch == 1
    assert (tmp_path / "run" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------------------------------
# Two processes == one process
# ----------------------------------------------------------------------------------------------------------------------

GLOBAL_BATCH = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MODES = {
    "no_masking": dict(pretraining_masking="none", projector_norm="none"),
    "official_masks": dict(pretraining_masking="official", projector_norm="none"),
    "batch_norm": dict(pretraining_masking="none", projector_norm="batch_norm"),
}


def _mode_inputs(mode: str):
    """Config, per-sample view masks of the whole global batch, and the two views: the same in every process."""
    config = tiny_config(max_length=128, **MODES[mode])
    generator_state = torch.get_rng_state()
    torch.manual_seed(11)
    masks = [DRAW_VIEW_MASKS(config, view, 8, GLOBAL_BATCH, torch.device("cpu")) for view in (0, 1)]
    torch.set_rng_state(generator_state)
    generator = torch.Generator().manual_seed(5)
    views = [torch.randn(GLOBAL_BATCH, 128, 128, generator=generator) for _ in range(2)]
    return config, masks, views


def _use_masks(masks, offset: int) -> None:
    """Make every view-0/1 forward take the fixed masks of samples offset.. (instead of drawing from this process's
    RNG, which differs by rank)."""
    def fixed(config, view, num_time_patches, batch_size, device):
        return None if masks[view] is None else masks[view][offset : offset + batch_size]

    modeling.pretraining_view_keep_indices = fixed


def _data_parallel_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One process of a gloo group: the pretraining step (`compute_gradients`: all-gathered negatives, DDP averaging)
    on its contiguous share of a fixed global batch; then rank 0, with the group torn down, runs the same step on the
    whole batch as a single process."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from audiomosaic_training import pretrain as script

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == world_size
    local_batch = GLOBAL_BATCH // world_size
    results = {}
    for mode in MODES:
        config, masks, views = _mode_inputs(mode)
        _use_masks(masks, rank * local_batch)
        torch.manual_seed(0)
        model = AudioMosaicForPreTraining(config)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer = build_optimizer(model, 1e-3, 0.05)
        prepared, optimizer = accelerator.prepare(model, optimizer)
        local = slice(rank * local_batch, (rank + 1) * local_batch)
        step = script.compute_gradients(accelerator, prepared, {"input_values": views[0][local],
                                                                "input_values_view1": views[1][local]})
        grads = {n: p.grad.clone() for n, p in accelerator.unwrap_model(prepared).named_parameters()
                 if p.grad is not None}
        results[mode] = {"loss": step["loss"], "grads": grads, "initial": initial}
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    if rank != 0:
        return
    for mode, result in results.items():
        config, masks, views = _mode_inputs(mode)
        _use_masks(masks, 0)
        model = AudioMosaicForPreTraining(config)
        model.load_state_dict(result.pop("initial"))
        model.train()
        output = model(input_values=views[0], input_values_view1=views[1])
        output.loss.backward()
        result["single_loss"] = float(output.loss.detach())
        result["single_grads"] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.save(results, Path(out_dir) / "results.pt")


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    """Loss and every parameter gradient of a 2-process gloo step (negatives all-gathered with gradients, DDP
    averaging) equal those of one process on the whole batch. Exact with `projector_norm="none"` (no per-process
    batch statistics), both without masking and with the official view masks fixed per sample; with the authors'
    BatchNorm projector the statistics are per process on CPU (SyncBatchNorm needs CUDA), so it only agrees roughly."""
    import torch.multiprocessing as mp

    start = time.time()
    mp.spawn(_data_parallel_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = torch.load(tmp_path / "results.pt")
    report = {}
    for mode, result in results.items():
        loss_delta = abs(result["loss"] - result["single_loss"])
        assert result["grads"].keys() == result["single_grads"].keys()
        grad_delta = max(float((result["grads"][n] - g).abs().max()) for n, g in result["single_grads"].items())
        grad_scale = max(float(g.abs().max()) for g in result["single_grads"].values())
        report[mode] = {"loss": result["single_loss"], "loss_2proc": result["loss"], "max_abs_loss_delta": loss_delta,
                        "max_abs_grad_delta": grad_delta, "max_abs_grad": grad_scale}
    print("\n2 processes vs 1:", json.dumps(report, indent=1), f"({time.time() - start:.1f} s)")
    for mode in ("no_masking", "official_masks"):
        assert report[mode]["max_abs_loss_delta"] < 1e-5, report[mode]
        assert report[mode]["max_abs_grad_delta"] < 1e-5 * max(1.0, report[mode]["max_abs_grad"]), report[mode]
    assert report["no_masking"]["loss"] != report["official_masks"]["loss"]  # the masks were applied
    assert report["batch_norm"]["max_abs_grad_delta"] > 1e-4  # documents why BatchNorm is not the exact mode


# ----------------------------------------------------------------------------------------------------------------------
# SIGKILL and resume
# ----------------------------------------------------------------------------------------------------------------------


def _command(clip_list: Path, output_dir: Path) -> list[str]:
    return [sys.executable, "-m", "audiomosaic_training.pretrain", "--recipe", "pretrain_tiny_cpu", "--dataset",
            str(clip_list), "--output_dir", str(output_dir), "--max_steps", "15", "--save_steps", "3",
            "--dataloader_num_workers", "1", "--torch_threads", "1", "--disable_tqdm", "--effective_rank_steps", "5"]


def test_sigkilled_run_resumes_to_the_same_weights(clip_list, tmp_path):
    """15 steps over 24 clips in batches of 8 (5 epochs). An uninterrupted run, then a run killed with SIGKILL right
    after its first checkpoint and re-run with the same command: the final weights are identical, as is the
    projector/optimizer state of the last checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_command(clip_list, reference_dir), check=True, env=env, capture_output=True, timeout=300)

    log = tmp_path / "killed_run.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(_command(clip_list, killed_dir), env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 240
    while not pretrain.list_checkpoints(killed_dir) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if process.poll() is not None:  # it ended on its own: say how, rather than fail to kill it
        pytest.fail(f"the run ended (exit {process.returncode}) before it could be killed:\n{log.read_text()[-2000:]}")
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed_dir / "model.safetensors").exists()
    interrupted_at = json.loads((pretrain.list_checkpoints(killed_dir)[-1] / "pretrain_state.json").read_text())
    assert 3 <= interrupted_at["global_step"] < 15

    resumed = subprocess.run(_command(clip_list, killed_dir), check=True, env=env, capture_output=True, text=True,
                             timeout=300)
    assert "Resumed from" in resumed.stderr
    for name in ("model.safetensors", "checkpoints/step_00000015/state/model.safetensors"):
        expected, actual = load_file(reference_dir / name), load_file(killed_dir / name)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name
    # The log has one line per step whatever happened, and a checkpoint folder loads as an AutoModel.
    steps = [json.loads(line)["step"] for line in (killed_dir / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(pretrain.list_checkpoints(killed_dir)[-1])
    assert torch.equal(encoder.state_dict()["fc_norm.weight"], load_file(killed_dir / "model.safetensors")["fc_norm.weight"])


def test_resuming_another_run_is_refused_naming_the_difference(clip_list, tmp_path, capsys, fresh_accelerate_state):
    """An output folder holding a run on 24 clips for 2 steps is not silently continued on 12 clips for 4 steps: the
    command line says which fields differ and the two ways out, and nothing in the folder changes; --force_resume
    continues it; the same run with other logging options resumes as before."""
    half = tmp_path / "half.csv"
    half.write_text("".join(clip_list.read_text().splitlines(keepends=True)[:13]))
    common = ["--recipe", "pretrain_tiny_cpu", *TINY_MODEL, "--per_device_train_batch_size", "4",
              "--dataloader_num_workers", "0", "--disable_tqdm", "--probe_size", "0", "--output_dir", str(tmp_path / "run")]
    pretrain.main([*common, "--dataset", str(clip_list), "--max_steps", "2"])
    log_before = (tmp_path / "run" / "log.jsonl").read_text()

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["pretrain", *common, "--dataset", str(half), "--max_steps", "4"])
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error:" in line]  # besides the datasets progress bar
    assert exit_info.value.code == 1 and len(errors) == 1 and "Traceback" not in stderr
    message = errors[0]
    assert "belongs to another run" in message and "clips: 24 -> 12" in message and "total_steps: 2 -> 4" in message
    assert "--overwrite_output_dir" in message and "--force_resume" in message
    assert (tmp_path / "run" / "log.jsonl").read_text() == log_before

    state = pretrain.main([*common, "--dataset", str(clip_list), "--max_steps", "2", "--logging_steps", "5"])
    assert state.global_step == 2  # the same run (other logging) resumes; nothing is left to do
    state = pretrain.main([*common, "--dataset", str(half), "--max_steps", "4", "--force_resume"])
    assert state.global_step == 4 and state.run["clips"] == 12


def test_run_batch_sampler_spans_epochs_and_resumes_exactly():
    """One sampler serves the whole run: each epoch's batches in order, keys carrying their epoch; started at a saved
    position it yields exactly the rest of the uninterrupted sequence."""
    def keys(start_epoch, start_step, count):
        return list(two_view_data.RunBatchSampler(50, 7, 8, 1, 0, start_epoch, start_step, count))

    whole = keys(0, 0, 15)  # 6 batches per epoch (50 // 8): epochs 0, 1 and half of 2
    per_epoch = [two_view_data.epoch_batches(50, epoch, 7, 8, 1, 0) for epoch in range(3)]
    expected = [[(epoch, index) for index in batch] for epoch in range(3) for batch in per_epoch[epoch]][:15]
    assert whole == expected and len(two_view_data.RunBatchSampler(50, 7, 8, 1, 0, 0, 0, 15)) == 15
    assert keys(1, 4, 5) == whole[10:15]
    with pytest.raises(ValueError, match="no batch from position 9"):
        keys(0, 9, 1)


def test_one_loader_keeps_its_workers_across_epochs(tmp_path):
    """The run's DataLoader is created once: epoch 2's batches come from the same worker processes as epoch 0's."""
    class WorkerPids(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, key):
            return key[0], os.getpid()

    sampler = two_view_data.RunBatchSampler(8, 0, 4, 1, 0, 0, 0, 6)  # 2 batches per epoch, 3 epochs
    loader = torch.utils.data.DataLoader(WorkerPids(), batch_sampler=sampler, num_workers=2,
                                         collate_fn=lambda items: items)
    pids = {}
    for batch in loader:
        for epoch, pid in batch:
            pids.setdefault(epoch, set()).add(pid)
    assert set(pids) == {0, 1, 2} and pids[0] == pids[1] == pids[2] and os.getpid() not in pids[0]


def test_device_batches_hand_out_every_batch_with_its_views():
    data_args = pretrain.DataArguments(dataset="x", augmentation="aug2", augmentation_backend="spectral")
    extractor = AudioMosaicFeatureExtractor.from_preset("speechcommands", max_length=32)
    views = pretrain.build_views(data_args, extractor, torch.device("meta"))  # "not CPU": the device path
    rng = np.random.default_rng(0)
    host = [{**views.collate([{"waveform": rng.normal(0, 0.1, 4000).astype(np.float32), "seed": 10 * b + i}
                              for i in range(2)]), "failures": [{"index": b}]} for b in range(3)]
    handed = list(two_view_data.DeviceBatches(iter([dict(batch) for batch in host]), views, torch.device("cpu")))
    assert [batch["failures"] for batch in handed] == [[{"index": b}] for b in range(3)]
    for batch, original in zip(handed, host, strict=True):
        expected = views.transform.views_from_batch(original["waveforms"], original["lengths"], original["seeds"])
        assert set(batch) == {"input_values", "input_values_view1", "failures"}
        assert torch.equal(batch["input_values"], expected[0]) and torch.equal(batch["input_values_view1"], expected[1])


def test_memory_option_checkpoints_the_fewest_blocks_that_fit():
    from audiomosaic_training.memory import checkpointed_blocks_for_memory, estimate_peak_memory_gib

    config = tiny_config(num_hidden_layers=4, max_length=128, pretraining_masking="official")
    estimates = [estimate_peak_memory_gib(config, 32, blocks, "no") for blocks in range(5)]
    assert estimates[0] > estimates[2] > estimates[4]
    budget = (estimates[1] + estimates[2]) / 2
    blocks, estimate = checkpointed_blocks_for_memory(config, 32, budget, "no")
    assert blocks == min(k for k, value in enumerate(estimates) if value <= budget) and estimate == estimates[blocks]
    with pytest.raises(ValueError, match="even with all 4 blocks checkpointed; lower --per_device_train_batch_size"):
        checkpointed_blocks_for_memory(config, 32, estimates[4] * 0.9, "no")
    model_args = pretrain.ModelArguments(gradient_checkpointing_memory_gib=budget)
    args = pretrain.PretrainingArguments(output_dir="x", per_device_train_batch_size=32)
    flags = pretrain.configure_memory(AudioMosaicForPreTraining(config), model_args, args)
    assert flags == [True] * blocks + [False] * (4 - blocks)
    with pytest.raises(ValueError, match="--gradient_checkpointing_memory_gib must be a positive"):
        pretrain.ModelArguments(gradient_checkpointing_memory_gib=0)
    with pytest.raises(ValueError, match="--activation_memory_budget needs --torch_compile"):
        pretrain.PretrainingArguments(output_dir="x", activation_memory_budget=0.5)


def test_memory_estimate_matches_the_tracked_step():
    """The estimate (a step of fake tensors) against MemTracker on a real step of the same batch."""
    from torch.distributed._tools.mem_tracker import MemTracker

    from audiomosaic_training.memory import checkpoint_blocks, estimate_peak_memory_gib

    config = tiny_config(num_hidden_layers=3, max_length=128, pretraining_masking="official")
    for blocks in (0, 2):
        torch.manual_seed(0)
        model = AudioMosaicForPreTraining(config).train()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        checkpoint_blocks(model, blocks)
        optimizer = build_optimizer(model, 1e-3, 0.05)
        views = [torch.randn(12, 128, 128) for _ in range(2)]
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            for step in range(2):
                output = model(input_values=views[0], input_values_view1=views[1], return_loss=False)
                (output.projection_view0 * output.projection_view1).sum().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step == 0:
                    tracker.reset_mod_stats()
        measured = sum(stats.get("Total", 0) for stats in tracker.get_tracker_snapshot("peak").values()) / 2**30
        assert estimate_peak_memory_gib(config, 12, blocks, "no") == pytest.approx(measured, rel=0.05)
