"""Interpretability subpackage: hooks read exactly the attention projection input, interventions edit exactly the
chosen heads, the SAE recovers a planted dictionary, CALM/SAV find the informative heads, the activation cache is
reused, and the four CLI commands run end to end on a tiny random encoder."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch


pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicModel  # noqa: E402
from modeling_audiomosaic.cli import run  # noqa: E402
from modeling_audiomosaic.interpret import (  # noqa: E402
    CALMClassifier,
    HeadIntervention,
    HeadOutputCollector,
    HeadSoftVoteClassifier,
    SAVClassifier,
    SparseAutoencoder,
    evaluate_head_intervention,
    evaluate_sae,
    latent_class_report,
    load_or_collect_activations,
    train_sae,
)


def tiny_model(seed: int = 0) -> AudioMosaicModel:
    torch.manual_seed(seed)
    config = AudioMosaicConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                               max_length=64)
    return AudioMosaicModel(config).eval()


def manual_head_outputs(model: AudioMosaicModel, hidden: torch.Tensor, block: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head, concatenated: the o_proj input, written out by hand."""
    layer = model.layers[block]
    x = layer.layernorm_before(hidden)
    heads, dim = model.config.num_attention_heads, model.config.hidden_size // model.config.num_attention_heads
    q, k, v = layer.attention.qkv(x).view(*x.shape[:2], 3, heads, dim).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / dim**0.5, dim=-1)
    return (weights @ v).transpose(1, 2).reshape(*x.shape)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_collector_reads_the_attention_projection_input(attention):
    model = tiny_model()
    model.set_attn_implementation(attention)
    inputs = torch.randn(2, 64, 128)
    with torch.no_grad(), HeadOutputCollector(model) as collector:
        output = model(inputs, output_hidden_states=True)
        for block in range(2):
            expected = manual_head_outputs(model, output.hidden_states[block], block)
            torch.testing.assert_close(collector.outputs[block], expected, atol=1e-5, rtol=1e-5)
        heads = expected.reshape(2, -1, 4, 8)
        pooled = collector.pooled("mean")
        torch.testing.assert_close(pooled[:, 1], heads.mean(dim=1))
        torch.testing.assert_close(collector.pooled("cls")[:, 1], heads[:, 0])
        torch.testing.assert_close(collector.pooled("mean_patches")[:, 1], heads[:, 1:].mean(dim=1))
        assert collector.pooled("cls+mean").shape == (2, 2, 4, 16)
    assert collector.head_index_[5] == (1, 1)
    assert not model.layers[0].attention.o_proj._forward_pre_hooks  # hooks are removed on exit


def test_zeroing_a_head_equals_zeroing_its_output_projection_columns():
    model = tiny_model()
    inputs = torch.randn(2, 64, 128)
    with torch.no_grad():
        with HeadIntervention(model, [(1, 2)], mode="zero"):
            edited = model(inputs).pooler_output
        reference = tiny_model()
        reference.layers[1].attention.o_proj.weight[:, 16:24] = 0
        torch.testing.assert_close(edited, reference(inputs).pooler_output)
        clean = model(inputs).pooler_output
        assert not torch.allclose(edited, clean)
        with HeadIntervention(model, [(0, 0), (1, 3)], mode="scale", scale=1.0):
            torch.testing.assert_close(model(inputs).pooler_output, clean)
        torch.testing.assert_close(model(inputs).pooler_output, clean)  # the hooks are gone after the block
    with pytest.raises(ValueError, match="does not exist"):
        HeadIntervention(model, [(2, 0)])
    with pytest.raises(ValueError, match="needs `values`"):
        HeadIntervention(model, [(0, 0)], mode="mean")


def test_block_input_cache_reruns_only_later_blocks_with_identical_results():
    from sklearn.linear_model import LogisticRegression

    from modeling_audiomosaic.interpret.heads import BlockInputCache, dose_response, pooled_outputs

    model = tiny_model()
    inputs = torch.randn(10, 64, 128)
    cache = BlockInputCache(model, inputs, blocks=[1], batch_size=4)
    np.testing.assert_array_equal(cache.clean_pooled_outputs, pooled_outputs(model, inputs, batch_size=4))
    calls = []
    handle = model.layers[0].register_forward_pre_hook(lambda module, args: calls.append(1))
    with HeadIntervention(model, [(1, 2), (1, 0)], mode="scale", scale=3.0):
        edited = cache.pooled_outputs(first_block=1)
        assert not calls  # block 0 was not rerun
        np.testing.assert_array_equal(edited, pooled_outputs(model, inputs, batch_size=4))
    handle.remove()
    assert not np.array_equal(edited, cache.clean_pooled_outputs)
    with pytest.raises(ValueError, match="not cached"):
        cache.pooled_outputs(first_block=0)

    labels = np.repeat(np.array(["a", "b", "c"]), [4, 3, 3])  # "c" fills block 1: no matched random heads left
    readout = LogisticRegression(C=100.0).fit(cache.clean_pooled_outputs, labels)
    heads_by_class = {"a": [(1, 0), (1, 3)], "b": [(0, 1), (1, 1)], "c": [(1, 0), (1, 1), (1, 2), (1, 3)]}
    for mode in ("zero", "scale"):
        runs = [evaluate_head_intervention(model, inputs, labels, readout, heads_by_class, mode=mode, scale=4.0,
                                           n_random=3, progress=False, cache_block_inputs=cached)
                for cached in (True, False)]
        assert runs[0] == runs[1]
    doses = [dose_response(model, inputs, labels, readout, heads_by_class, progress=False,
                           cache_block_inputs=cached) for cached in (True, False)]
    assert doses[0] == doses[1]


def planted_dictionary(n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    atoms = torch.randn(48, 24, generator=generator)
    atoms /= atoms.norm(dim=1, keepdim=True)
    support = torch.rand(n, 48, generator=generator).argsort(dim=1)[:, :3]
    codes = torch.zeros(n, 48).scatter(1, support, torch.rand(n, 3, generator=generator) * 2 + 0.5)
    return atoms, codes @ atoms + 0.3


def test_topk_sae_recovers_a_planted_dictionary(tmp_path):
    atoms, data = planted_dictionary(3000)
    sae, history = train_sae(data[:2000], d_sae=96, k=3, epochs=10, batch_size=256, learning_rate=3e-3,
                             progress=False)
    assert history[-1]["fvu"] < history[0]["fvu"]
    metrics = evaluate_sae(sae, data[2000:])
    assert metrics["fvu"] < 0.15 and metrics["l0"] == 3.0
    decoder = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    best_cosine = (atoms @ decoder.T).max(dim=1).values
    assert (best_cosine > 0.9).float().mean() >= 0.9, best_cosine
    sae.save_pretrained(tmp_path)
    loaded = SparseAutoencoder.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.encode(data[:10]), sae.encode(data[:10]))


def test_relu_sae_trades_l1_for_sparsity():
    _, data = planted_dictionary(1000, seed=1)
    weak, _ = train_sae(data, d_sae=96, activation="relu", l1_coefficient=1e-4, epochs=4, progress=False)
    strong, _ = train_sae(data, d_sae=96, activation="relu", l1_coefficient=1e-1, epochs=4, progress=False)
    assert evaluate_sae(strong, data)["l0"] < evaluate_sae(weak, data)["l0"]


def test_latent_class_report_finds_a_class_latent():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 50)
    codes = rng.random((100, 6)) * (rng.random((100, 6)) > 0.5)
    codes[:50, 4] = 3 + rng.random(50)  # latent 4 fires for class a only
    codes[50:, 4] = 0
    top = latent_class_report(codes, labels, top_latents=1)[0]
    assert top["class"] == "a" and top["latent"] == 4 and top["auroc"] == 1.0 and top["top_clip_purity"] == 1.0


def synthetic_heads(n_per_class: int, seed: int = 0):
    """8 heads of dim 6 over 3 classes; only heads 2 and 5 carry the class (different directions per class)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array(["x", "y", "z"]), n_per_class)
    features = rng.normal(size=(len(labels), 8, 6)).astype(np.float32)
    centres = np.random.default_rng(100).normal(size=(3, 2, 6)) * 3  # the same classes for every seed
    for c in range(3):
        features[np.flatnonzero(labels == "xyz"[c])[:, None], [2, 5]] += centres[c]
    return features, labels


def test_calm_weights_the_informative_heads_and_sav_selects_them():
    from sklearn.base import clone

    X, y = synthetic_heads(15)
    X_test, y_test = synthetic_heads(20, seed=1)
    calm = clone(CALMClassifier()).fit(X, y)
    assert set(np.argsort(-calm.weights_.sum(axis=1))[:2]) == {2, 5}
    assert calm.score(X_test, y_test) > 0.9
    np.testing.assert_allclose(calm.predict_proba(X_test).sum(axis=1), 1.0, rtol=1e-6)
    sav = SAVClassifier(n_heads=2).fit(X, y)
    assert set(sav.selected_heads_) == {2, 5}
    assert sav.score(X_test, y_test) > 0.9
    one_shot = CALMClassifier().fit(X[::15], y[::15])  # one clip per class, nothing held out: no reliabilities
    assert one_shot.reliability_source_ == "none (one shot per class)"
    np.testing.assert_array_equal(one_shot.weights_, np.full((8, 3), 1 / 8))
    np.testing.assert_array_equal(one_shot.predict(X_test),
                                  HeadSoftVoteClassifier().fit(X[::15], y[::15]).predict(X_test))
    validated = CALMClassifier().fit(X[::15], y[::15], X_val=X, y_val=y)  # a reliability split, as the reference
    assert validated.reliability_source_ == "validation split"
    assert set(np.argsort(-validated.weights_.sum(axis=1))[:2]) == {2, 5}
    for scheme in ("margin_softmax", "prob_softmax", "brier_softmax"):
        soft_weights = CALMClassifier(weight_scheme=scheme, tau_w=0.1).fit(X, y)
        expected = np.exp(soft_weights.reliability_ / 0.1)
        np.testing.assert_allclose(soft_weights.weights_, expected / expected.sum(axis=0), rtol=1e-6)
        assert set(np.argsort(-soft_weights.weights_.sum(axis=1))[:2]) == {2, 5}
    with pytest.raises(ValueError, match="weight_scheme"):
        CALMClassifier(weight_scheme="prob").fit(X, y)
    self_trained = CALMClassifier(self_training=True).fit(X[::5], y[::5], X_unlabeled=X_test)
    assert len(self_trained.pseudo_label_index_) > 0
    with pytest.raises(ValueError, match="head_dim"):
        calm.predict(X_test[:, :, 0])


def write_tones(folder: Path, per_class: int = 6) -> Path:
    """Two classes of 1 s synthetic clips (a low and a high tone with noise); nothing is copied from data sets."""
    import soundfile

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for name, frequency in (("low", 300.0), ("high", 3000.0)):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            clip = 0.3 * np.sin(2 * np.pi * frequency * (1 + 0.02 * i) * t) + 0.02 * rng.normal(size=t.size)
            soundfile.write(folder / name / f"{i}.wav", clip.astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("interpret_model")
    tiny_model().save_pretrained(path)
    AudioMosaicFeatureExtractor.from_preset("speechcommands", max_length=64).save_pretrained(path)
    return path


def test_activation_cache_is_reused_and_keyed_by_the_weights(tmp_path, tiny_checkpoint):
    files = sorted(str(p) for p in write_tones(tmp_path / "audio", per_class=2).rglob("*.wav"))
    fe = AudioMosaicFeatureExtractor.from_pretrained(tiny_checkpoint)
    model = AudioMosaicModel.from_pretrained(tiny_checkpoint).eval()
    first, path, cached = load_or_collect_activations(model, fe, files, tmp_path / "cache", progress=False)
    again, same_path, cached_again = load_or_collect_activations(model, fe, files, tmp_path / "cache",
                                                                 progress=False)
    assert not cached and cached_again and path == same_path
    assert first.heads.shape == (4, 2, 4, 8) and first.hidden.shape == (4, 3, 32)
    torch.testing.assert_close(again.heads, first.heads)
    other, other_path, _ = load_or_collect_activations(tiny_model(seed=1), fe, files, tmp_path / "cache",
                                                       progress=False)
    assert other_path != path


def test_cli_commands_end_to_end(tmp_path, tiny_checkpoint):
    data = write_tones(tmp_path / "audio")
    common = [str(data), "--model", str(tiny_checkpoint), "--cache_dir", str(tmp_path / "cache"), "--quiet"]
    info = run(["sae-train", *common, "--output_dir", str(tmp_path / "sae_run"), "--mode", "token", "--layer", "2",
                "--expansion", "2", "--k", "4", "--epochs", "3"])
    assert info["mode"] == "token" and info["layer"] == 2 and 0 <= info["held_out"]["dead_fraction"] <= 1
    report = run(["sae-report", *common, "--output_dir", str(tmp_path / "report"),
                  "--sae", str(tmp_path / "sae_run" / "sae"), "--top_clips", "2"])
    assert {"accuracy", "macro_f1"} <= set(report["probe_codes"])
    assert (tmp_path / "report" / "sae_latent_spectrograms.png").is_file()
    assert (tmp_path / "report" / "sae_class_latent_heatmap.png").is_file()
    fewshot = run(["fewshot", *common, "--output_dir", str(tmp_path / "fewshot"), "--shots", "1,2",
                   "--episodes", "2"])
    methods = {row["method"] for row in fewshot["summary"]}
    assert "CALM" in methods and any(m.startswith("SAV") for m in methods)
    assert (tmp_path / "fewshot" / "calm_reliability.png").is_file()
    heads = run(["heads", *common, "--output_dir", str(tmp_path / "heads"), "--cv", "2", "--top_heads", "2",
                 "--n_random", "2", "--max_eval_per_class", "2"])
    assert np.array(heads["probe_accuracy"]).shape == (2, 4)
    assert len(heads["dose_response"]) == 7
    assert (tmp_path / "heads" / "head_dose_response.png").is_file()
    assert json.loads((tmp_path / "heads" / "heads_results.json").read_text())["top_heads"] == 2


def test_cli_reports_a_missing_label_column_in_one_line(tmp_path, tiny_checkpoint, capsys):
    table = tmp_path / "list.csv"
    table.write_text("audio,kind\nmissing.wav,a\n")
    with pytest.raises(SystemExit) as exit_info:
        run(["fewshot", str(table), "--model", str(tiny_checkpoint), "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    assert "no column `label`" in capsys.readouterr().err
