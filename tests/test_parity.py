"""Parity with the authors' code: every tensor of `../shared/fixtures/official/manifest.json` (except the filterbank
one, tested with the feature extractor) is reproduced by checkpoints converted with our converter.

The fixture checkpoints are written as authors' Hub release folders (config.json with `model_class` and the
constructor arguments from the manifest + model.safetensors), so the converter's release-folder path is what runs.
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_audiomosaic import AudioMosaicForAudioClassification, AudioMosaicForPreTraining, contrastive_loss
from modeling_audiomosaic.convert_official import convert
from modeling_audiomosaic.modeling_audiomosaic import resize_position_embeddings


ATOL = 1e-5
PROBE_CLASSES = {
    "layer_probe": "AudioMosaicLayerProbe",
    "weighted_sum_probe": "AudioMosaicWeightedSumProbe",
    "attentive_probe": "AudioMosaicAttentiveProbe",
    "aasist": "AudioMosaicAASIST",
}


# Filled as the tests run; conftest.py prints it as the parity table at the end of the session.
PARITY_TABLE: dict[str, float] = {}


def max_error(ours: torch.Tensor, reference: torch.Tensor, name: str | None = None) -> float:
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    error = (ours.float() - reference.float()).abs().max().item()
    if name:
        PARITY_TABLE[name] = max(error, PARITY_TABLE.get(name, 0.0))
    return error


def batch_statistics_tolerance(model, pooler_output: torch.Tensor, reference_pooled: torch.Tensor) -> float:
    """Tolerance for train-mode projections, which BatchNorm normalises with the statistics of this batch.

    Over a batch of 2-4 clips a feature's standard deviation can be ~1e-3, so the projector amplifies the tiny
    differences of its input (fc_norm output, itself within ATOL) by a large factor, and float reductions that differ
    between CPUs (AVX2 vs AVX-512) then move the projections past ATOL. The bound is first-order error propagation:
    ATOL plus the projector's gain (infinity norm of its Jacobian at this input) times the input's actual difference
    from the authors' (their pooled features through our fc_norm). The projector's own arithmetic is checked
    separately on the authors' input (`projector_rounding_tolerance`).
    """
    with torch.no_grad():
        reference_input = model.audiomosaic.fc_norm(reference_pooled)
    return ATOL + projector_gain(model, pooler_output) * (pooler_output - reference_input).abs().max().item()


def projector_gain(model, projector_input: torch.Tensor) -> float:
    """Infinity norm of the train-mode projector's Jacobian at `projector_input`: how much it amplifies input
    errors."""
    projector = copy.deepcopy(model.projector)  # train-mode calls update running statistics: keep the model's intact
    jacobian = torch.autograd.functional.jacobian(projector, projector_input.detach())
    return jacobian.abs().flatten(start_dim=2).sum(dim=-1).max().item()


def projector_rounding_tolerance(model, projector_input: torch.Tensor) -> float:
    """Tolerance for the projector's own arithmetic on a given input: ATOL plus its gain times one float32 rounding
    of the input's scale. Its first matmul sums in an order that depends on the number of threads and the CPU, and
    train-mode BatchNorm over 2 clips amplifies those last-bit differences (by ~1000 on the long fixture)."""
    return ATOL + projector_gain(model, projector_input) * torch.finfo(torch.float32).eps * \
        projector_input.abs().max().item()


def write_release(folder, state_dict, config):
    folder.mkdir(parents=True)
    save_file({key: value.float().contiguous() for key, value in state_dict.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory, fixtures_dir, manifest):
    """Convert every fixture checkpoint once; returns {name: loaded model}."""
    root = tmp_path_factory.mktemp("converted")
    models = {}
    for tag in ("sq", "long"):
        for kind, model_class in (("pretrain", AudioMosaicForPreTraining), ("classifier", AudioMosaicForAudioClassification)):
            name = f"{kind}_{tag}"
            config = dict(manifest["files"][f"{name}.safetensors"]["config"])
            config["model_class"] = config.pop("class")
            release = write_release(root / f"release_{name}", load_file(fixtures_dir / f"{name}.safetensors"), config)
            models[name] = model_class.from_pretrained(convert(release, root / name))
    encoder = {k: v for k, v in load_file(fixtures_dir / "pretrain_sq.safetensors").items() if not k.startswith("projector.")}
    for kind, model_class in PROBE_CLASSES.items():
        head_name = f"{kind}_sq_head.safetensors"
        config = dict(manifest["files"][head_name]["config"], model_class=model_class)
        state_dict = {**encoder, **load_file(fixtures_dir / head_name)}
        release = write_release(root / f"release_{kind}", state_dict, config)
        models[kind] = AudioMosaicForAudioClassification.from_pretrained(convert(release, root / kind))
    return models


@pytest.fixture(scope="module")
def inputs(fixtures_dir):
    return load_file(fixtures_dir / "inputs.safetensors")


def test_every_manifest_file_is_covered(manifest):
    covered = {"inputs", "fbank_frontend", "pos_embed_interpolation"}
    covered |= {f"{kind}_{tag}{suffix}" for kind in ("pretrain", "classifier") for tag in ("sq", "long")
                for suffix in ("", "_eval_io")}
    covered |= {"pretrain_sq_masking", "pretrain_long_masking", "classifier_sq_train_masking"}
    covered |= {f"{kind}_sq_{suffix}" for kind in PROBE_CLASSES for suffix in ("head", "eval_io")}
    assert {name.removesuffix(".safetensors") for name in manifest["files"]} == covered


@pytest.mark.parametrize("tag", ["sq", "long"])
@pytest.mark.parametrize("kind", ["pretrain", "classifier"])
def test_eval_forward(converted, inputs, fixtures_dir, kind, tag):
    model = converted[f"{kind}_{tag}"].eval()
    reference = load_file(fixtures_dir / f"{kind}_{tag}_eval_io.safetensors")
    with torch.no_grad():
        encoded = model.audiomosaic(inputs[f"input_{tag}"], output_hidden_states=True)
        outputs = {
            "embedding_output": encoded.hidden_states[0],
            "hidden_states.1": encoded.hidden_states[1],
            "hidden_states.2": encoded.hidden_states[2],
        }
        pooled = model.audiomosaic.pool(encoded.last_hidden_state)
        if kind == "pretrain":
            outputs.update(f=pooled, fc_norm_out=encoded.pooler_output, z=model.projector(encoded.pooler_output))
            full = model(inputs[f"input_{tag}"], return_loss=False)
            assert max_error(full.projection_view0, reference["z"]) <= ATOL
        else:
            outputs.update(pooled=pooled, pooled_fc_norm=encoded.pooler_output, logits=model(inputs[f"input_{tag}"]).logits)
        errors = {key: max_error(value, reference[key], f"{kind}_{tag}_eval_io/{key}") for key, value in outputs.items()}
    assert max(errors.values()) <= ATOL, errors


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_eval_forward_both_attention_backends(converted, inputs, fixtures_dir, attn_implementation):
    model = converted["classifier_long"].eval()
    model.set_attn_implementation(attn_implementation)
    reference = load_file(fixtures_dir / "classifier_long_eval_io.safetensors")
    with torch.no_grad():
        logits = model(inputs["input_long"]).logits
    assert max_error(logits, reference["logits"]) <= ATOL


@pytest.mark.parametrize("tag", ["sq", "long"])
def test_pretraining_views_masking_and_loss(converted, inputs, fixtures_dir, manifest, tag):
    """The authors' swapped-grid view masking (same RNG consumption), the views' tokens, pooled features,
    train-mode projections, and the NT-Xent logits and loss."""
    model = converted[f"pretrain_{tag}"].train()
    name = f"pretrain_{tag}_masking"
    reference = load_file(fixtures_dir / f"{name}.safetensors")
    seeds = manifest["files"][f"{name}.safetensors"]["seeds"]
    views = {}
    for view, branch in ((0, "time"), (1, "freq")):
        torch.manual_seed(seeds[branch])
        with torch.no_grad():
            out = model.forward_view(inputs[f"input_{tag}"], view)
        views[branch] = out
        assert torch.equal(out.keep_patch_indices, reference[f"{branch}.ids_keep"])
        PARITY_TABLE.setdefault(f"{name}/{branch}.ids_keep (exact)", 0.0)
        dropped = torch.ones_like(reference[f"{branch}.mask"])
        dropped.scatter_(1, out.keep_patch_indices, 0.0)
        assert torch.equal(dropped, reference[f"{branch}.mask"])
        assert max_error(out.last_hidden_state, reference[f"{branch}.toks"], f"{name}/{branch}.toks") <= ATOL
        assert max_error(out.pooled, reference[f"{branch}.f"], f"{name}/{branch}.f") <= ATOL
        with torch.no_grad():
            reference_input = model.audiomosaic.fc_norm(reference[f"{branch}.f"])
            projection_of_reference = model.projector(reference_input)
        assert max_error(projection_of_reference, reference[f"{branch}.z_trainmode_bn"]) <= \
            projector_rounding_tolerance(model, reference_input)
        projection_atol = batch_statistics_tolerance(model, out.pooler_output, reference[f"{branch}.f"])
        z_name = f"{name}/{branch}.z_trainmode_bn"
        assert max_error(out.projection, reference[f"{branch}.z_trainmode_bn"], z_name) <= projection_atol
    # The loss itself, on the authors' projections: exact arithmetic, so the eval-mode tolerance applies.
    loss, logits, labels, _ = contrastive_loss(
        reference["time.z_trainmode_bn"], reference["freq.z_trainmode_bn"], temperature=0.1
    )
    assert torch.equal(labels, reference["ntxent.labels"])
    assert max_error(logits, reference["ntxent.logits"], f"{name}/ntxent.logits") <= ATOL
    assert max_error(loss.reshape(1), reference["ntxent.loss"], f"{name}/ntxent.loss") <= ATOL
    # End to end from our projections: cosine logits at temperature 0.1 scale projection differences by up to
    # 2 / (0.1 * |z|) (|z| ~ sqrt(dim) after BatchNorm), so the logits inherit the projections' tolerance.
    loss, logits, _, _ = contrastive_loss(views["time"].projection, views["freq"].projection, temperature=0.1)
    assert max_error(logits, reference["ntxent.logits"]) <= projection_atol


def test_pretraining_forward_consumes_rng_like_the_authors(converted, inputs, manifest, fixtures_dir):
    """A full training-mode forward draws view 0's mask then view 1's: re-seeding before each view reproduces it."""
    model = converted["pretrain_sq"].train()
    reference = load_file(fixtures_dir / "pretrain_sq_masking.safetensors")
    torch.manual_seed(1234)
    with torch.no_grad():
        full = model(inputs["input_sq"])
    atol = batch_statistics_tolerance(model, full.pooler_output_view0, reference["time.f"])
    assert max_error(full.projection_view0, reference["time.z_trainmode_bn"]) <= atol
    assert full.logits.shape == (4, 3) and 0.0 <= full.contrastive_accuracy.item() <= 1.0


def test_classifier_training_patch_masking(converted, inputs, fixtures_dir, manifest):
    name = "classifier_sq_train_masking.safetensors"
    reference = load_file(fixtures_dir / name)
    meta = manifest["files"][name]
    model = converted["classifier_sq"].train()
    model.config.mask_time_prob, model.config.mask_freq_prob = meta["mask_t_prob"], meta["mask_f_prob"]
    try:
        torch.manual_seed(meta["seed"])
        keep = model._training_keep_indices(inputs["input_sq"])
        torch.manual_seed(meta["seed"])
        with torch.no_grad():
            out = model(inputs["input_sq"], output_hidden_states=True)
    finally:
        model.config.mask_time_prob = model.config.mask_freq_prob = 0.0
    assert torch.equal(keep, reference["kept_token_index"])
    assert max_error(out.hidden_states[0], reference["embedding_output"], "classifier_sq_train_masking/embedding_output") <= ATOL
    assert max_error(out.logits, reference["logits"], "classifier_sq_train_masking/logits") <= ATOL


@pytest.mark.parametrize("kind", list(PROBE_CLASSES))
def test_probes_and_aasist(converted, inputs, fixtures_dir, kind):
    model = converted[kind].eval()
    reference = load_file(fixtures_dir / f"{kind}_sq_eval_io.safetensors")
    # AASIST's back-end is a stack of float32 convolutions, BatchNorms and graph layers whose CPU kernels change
    # between torch releases: fed the authors' exact LL (token projection) output, it differs from their logits by ~2e-6 relative
    # (1.7e-5 on logits ~8 with torch 2.14). Its logits are compared relative to their scale; linear heads absolutely.
    logits_atol = ATOL * max(1.0, reference["logits"].abs().max().item()) if kind == "aasist" else ATOL
    with torch.no_grad():
        out = model(inputs["input_sq"], output_hidden_states=True)
        name = f"{kind}_sq_eval_io"
        assert max_error(out.logits, reference["logits"], f"{name}/logits") <= logits_atol
        if kind == "aasist":
            assert max_error(model.aasist.token_projection(out.hidden_states[-1]), reference["LL_output"], f"{name}/LL_output") <= ATOL
        else:
            features = model.head_features(model.audiomosaic(inputs["input_sq"], output_hidden_states=True))
            assert max_error(features, reference["fc_norm_output"], f"{name}/fc_norm_output") <= ATOL
            if kind == "layer_probe":
                assert max_error(out.hidden_states[1].mean(1), reference["fc_norm_input"], f"{name}/fc_norm_input") <= ATOL


@pytest.mark.parametrize("case", ["512_to_256", "256_to_128"])
def test_position_embedding_resize(fixtures_dir, case):
    reference = load_file(fixtures_dir / "pos_embed_interpolation.safetensors")
    source, result = reference[f"{case}.source"], reference[f"{case}.result"]
    resized = resize_position_embeddings(source, num_time_patches=(result.shape[1] - 1) // 8, num_freq_patches=8)
    assert max_error(resized, result, f"pos_embed_interpolation/{case}.result") <= ATOL


def test_model_resize_and_converter_max_length(converted, fixtures_dir, tmp_path):
    """Loading a checkpoint at another length resizes its positional embeddings the authors' way."""
    reference = load_file(fixtures_dir / "pos_embed_interpolation.safetensors")
    model = converted["classifier_long"]
    source = model.audiomosaic.embeddings.position_embeddings.detach().clone()
    expected = resize_position_embeddings(source, num_time_patches=8, num_freq_patches=8)
    resized = convert(fixtures_dir / "classifier_long.safetensors", tmp_path / "short", num_heads=4, max_length=128)
    short = AudioMosaicForAudioClassification.from_pretrained(resized)
    assert short.config.max_length == 128
    assert max_error(short.audiomosaic.embeddings.position_embeddings, expected) == 0.0
    assert reference["256_to_128.result"].shape == expected.shape
    with torch.no_grad():
        assert short(torch.randn(1, 128, 128)).logits.shape == (1, 10)
