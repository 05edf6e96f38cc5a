"""Behaviour of the config and the models beyond the authors' fixtures: validation, variable lengths, attention
masks, attention backends, gradient checkpointing, masking strategies, heads, losses and Auto registration."""

import math

import pytest
import torch
import transformers

import modeling_audiomosaic  # noqa: F401 - registers the Auto classes
from modeling_audiomosaic import (
    AudioMosaicConfig,
    AudioMosaicForAudioClassification,
    AudioMosaicForPreTraining,
    AudioMosaicModel,
    contrastive_loss,
)
from modeling_audiomosaic.analysis import masking_keep_indices
from modeling_audiomosaic.configuration_audiomosaic import CLASSIFIER_TYPES
from modeling_audiomosaic.modeling_audiomosaic import (
    CLASSIFIER_HEADS,
    grid_keep_indices,
    masked_mean,
    pretraining_view_keep_indices,
)


def tiny_config(**overrides) -> AudioMosaicConfig:
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_length=256,
                  drop_path_rate=0.0, projection_hidden_size=32, projection_dim=16, num_labels=5)
    values.update(overrides)
    return AudioMosaicConfig(**values)


def test_default_config_is_the_released_encoder():
    config = AudioMosaicConfig()
    model = transformers.AutoModel.from_config(config)
    assert isinstance(model, AudioMosaicModel)
    # spec §1.6: the released pretrained model minus its projector, fc_norm included.
    assert sum(p.numel() for p in model.parameters()) == 85_651_200
    assert model.embeddings.position_embeddings.shape == (1, 513, 768)
    # The authors' blocks use nn.GELU: the exact erf form, not the tanh approximation ("gelu_new").
    assert config.hidden_act == "gelu"
    points = torch.linspace(-4, 4, 101)
    assert torch.equal(model.layers[0].mlp.activation_fn(points), torch.nn.GELU()(points))
    assert not torch.allclose(torch.nn.GELU(approximate="tanh")(points), torch.nn.GELU()(points), rtol=0, atol=1e-6)
    rates = [layer.drop_path.drop_prob for layer in model.layers]
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.1)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=100), "hidden_size"),
        (dict(mask_ratio_time=1.0), "mask_ratio_time"),
        (dict(mask_ratio_freq=-0.1), "mask_ratio_freq"),
        (dict(pooling="max"), "pooling"),
        (dict(patch_size=32, max_length=16), "patch_size"),
        (dict(patch_size=48), "patch_size"),
        (dict(classifier_type="mlp"), "classifier_type"),
        (dict(pretraining_masking="random"), "pretraining_masking"),
        (dict(temperature=0.0), "temperature"),
        (dict(probe_layer=12), "probe_layer"),
    ],
)
def test_invalid_config_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        AudioMosaicConfig(**overrides)


def test_sincos_initialisation_follows_the_chosen_grid():
    official = AudioMosaicModel(tiny_config(position_embedding_init="official")).embeddings.position_embeddings[0]
    grid = AudioMosaicModel(tiny_config(position_embedding_init="grid")).embeddings.position_embeddings[0]
    assert torch.equal(official[0], torch.zeros(32)) and torch.equal(grid[0], torch.zeros(32))
    # True grid: tokens t*8+f with the same f share the first half (frequency code).
    assert torch.allclose(grid[1 + 0 * 8 + 3, :16], grid[1 + 5 * 8 + 3, :16])
    assert not torch.allclose(official[1 + 0 * 8 + 3, :16], official[1 + 5 * 8 + 3, :16])


@pytest.mark.parametrize("frames", [16, 100, 128, 256])
def test_any_length_up_to_max_length(frames):
    model = AudioMosaicModel(tiny_config()).eval()
    out = model(torch.randn(2, frames, 128))
    assert out.last_hidden_state.shape == (2, 1 + math.ceil(frames / 16) * 8, 32)
    assert out.pooler_output.shape == (2, 32)
    # (B, 1, T, F) is accepted like the authors' layout.
    torch.testing.assert_close(model(torch.randn(2, 1, frames, 128)).pooler_output.shape, out.pooler_output.shape)


@pytest.mark.parametrize(
    "shape, message",
    [((2, 300, 128), "max_length"), ((2, 128, 64), "128"), ((2, 8, 128), "at least 16"), ((128, 128), "shape")],
)
def test_bad_input_shapes_raise_clear_errors(shape, message):
    model = AudioMosaicModel(tiny_config()).eval()
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_attention_mask_makes_padding_invisible(attn_implementation):
    """A clip padded inside a batch gets the same outputs as the clip alone."""
    torch.manual_seed(0)
    model = AudioMosaicForAudioClassification(tiny_config()).eval()
    model.set_attn_implementation(attn_implementation)
    short, long = torch.randn(1, 64, 128), torch.randn(1, 256, 128)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 192, 128)], dim=1), long])
    mask = torch.zeros(2, 256, dtype=torch.long)
    mask[0, :64], mask[1] = 1, 1
    with torch.no_grad():
        alone = model(short).logits
        padded = model(batch, attention_mask=mask).logits
        unmasked = model(batch).logits
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[1], model(long).logits[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[0], alone[0], atol=1e-3)


def test_eager_and_sdpa_agree_and_eager_returns_attentions():
    torch.manual_seed(0)
    model = AudioMosaicModel(tiny_config()).eval()
    x = torch.randn(2, 128, 128)
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        sdpa = model(x, output_hidden_states=True)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = model(x, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(sdpa.last_hidden_state, eager.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert len(eager.hidden_states) == 3 and len(eager.attentions) == 2
    assert eager.attentions[0].shape == (2, 4, 65, 65)
    torch.testing.assert_close(eager.attentions[0].sum(-1), torch.ones(2, 4, 65))


ENCODER_OUTPUT_FIELDS = {
    AudioMosaicModel: [("hidden_states", "attentions")],
    AudioMosaicForAudioClassification: [("hidden_states", "attentions")],
    AudioMosaicForPreTraining: [("hidden_states", "attentions"), ("hidden_states_view1", "attentions_view1")],
}


@pytest.mark.parametrize("model_class", list(ENCODER_OUTPUT_FIELDS), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("classifier_type", ["linear", "layer_probe"])
def test_output_flags_fall_back_to_the_config(model_class, classifier_type):
    """`output_hidden_states`, `output_attentions` and `return_dict` left unset are read from the config, as in every
    transformers model; an explicit argument wins. (A block-reading head needs the hidden states itself, and still
    returns them only when asked.)"""
    torch.manual_seed(0)
    config = tiny_config(max_length=128, classifier_type=classifier_type, output_hidden_states=True,
                         output_attentions=True, attn_implementation="eager")
    model = model_class(config).eval()
    x = torch.randn(2, 128, 128)
    with torch.no_grad():
        from_config = model(x)
        asked_not = model(x, output_hidden_states=False, output_attentions=False)
    for hidden_field, attention_field in ENCODER_OUTPUT_FIELDS[model_class]:
        assert len(getattr(from_config, hidden_field)) == config.num_hidden_layers + 1
        assert len(getattr(from_config, attention_field)) == config.num_hidden_layers
        assert getattr(from_config, attention_field)[0].shape == (2, 4, 65, 65)
        assert getattr(asked_not, hidden_field) is None and getattr(asked_not, attention_field) is None
    config.return_dict = False
    with torch.no_grad():
        as_tuple = model(x)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(from_config)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = AudioMosaicForAudioClassification(tiny_config()).train()
    x, labels = torch.randn(2, 128, 128), torch.tensor([1, 3])
    model(x, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert all(layer.gradient_checkpointing for layer in model.audiomosaic.layers)
    model(x, labels=labels).loss.backward()
    for name, grad in plain.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-6, rtol=1e-5)


def test_grid_keep_indices_shapes_and_order():
    torch.manual_seed(0)
    time_kept = grid_keep_indices(3, rows=8, cols=8, row_ratio=0.6, col_ratio=None, device=torch.device("cpu"))
    assert time_kept.shape == (3, 3 * 8)
    rows = time_kept.view(3, 3, 8) // 8
    assert (rows == rows[..., :1]).all()  # whole rows kept, columns in order
    both = grid_keep_indices(2, rows=4, cols=8, row_ratio=0.25, col_ratio=0.5, device=torch.device("cpu"))
    assert both.shape == (2, 3 * 4) and both.unique(dim=1).shape == both.shape


@pytest.mark.parametrize(
    "strategy, kept_view0, kept_view1",
    [("official", 48, 72), ("paper", 48, 64), ("time", 48, 48), ("frequency", 64, 64), ("unstructured", 64, 64),
     ("none", None, None)],
)
def test_pretraining_masking_strategies_on_a_non_square_grid(strategy, kept_view0, kept_view1):
    """T = 256 frames: 16 x 8 patches. Official = the authors' swapped (8, 16) grid (spec §2.1 table)."""
    config = tiny_config(pretraining_masking=strategy)
    kept = [pretraining_view_keep_indices(config, view, 16, 2, torch.device("cpu")) for view in (0, 1)]
    assert [None if k is None else k.shape[1] for k in kept] == [kept_view0, kept_view1]
    if strategy == "paper":
        time_rows = kept[0] // 8
        assert all(len(rows.unique()) == 6 for rows in time_rows)  # whole time rows
        assert len((kept[1] % 8)[0].unique()) == 4 and len((kept[1] // 8)[0].unique()) == 16  # bands, all times


def test_pretraining_model_masks_only_in_training_and_returns_loss_and_accuracy():
    torch.manual_seed(0)
    model = AudioMosaicForPreTraining(tiny_config(max_length=128))
    x = torch.randn(4, 128, 128)
    model.train()
    out = model(x)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (8, 7) and out.projection_view0.shape == (4, 16)
    out.loss.backward()
    assert model.projector.norm_out.bias.grad is None and not model.projector.norm_out.bias.requires_grad
    assert model.audiomosaic.embeddings.cls_token.grad is not None
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a.projection_view0, b.projection_view1)  # no masking in eval: views are equal


def test_contrastive_loss_variants_and_errors():
    torch.manual_seed(0)
    z0, z1 = torch.randn(6, 8), torch.randn(6, 8)
    loss, logits, labels, accuracy = contrastive_loss(z0, z1, temperature=0.5, negatives="all")
    assert logits.shape == (12, 11) and torch.equal(labels, torch.arange(6).repeat(2))
    loss_eq4, logits_eq4, _, _ = contrastive_loss(z0, z1, temperature=0.5, negatives="cross_view")
    assert logits_eq4.shape == (12, 6)
    # Eq. 4 by hand: symmetric cross-entropy over cross-view similarities only.
    a, b = torch.nn.functional.normalize(z0, dim=1), torch.nn.functional.normalize(z1, dim=1)
    manual = 0.5 * (torch.nn.functional.cross_entropy(a @ b.T / 0.5, torch.arange(6))
                    + torch.nn.functional.cross_entropy(b @ a.T / 0.5, torch.arange(6)))
    torch.testing.assert_close(loss_eq4, manual)
    # Identical views: the positive is the most similar column.
    _, _, _, perfect = contrastive_loss(z0, z0.clone(), temperature=0.1)
    assert perfect.item() == 1.0
    with pytest.raises(ValueError, match="same"):
        contrastive_loss(z0, z1[:3])
    with pytest.raises(ValueError, match="negatives"):
        contrastive_loss(z0, z1, negatives="same_view")


@pytest.mark.parametrize("kind", ["linear", "layer_probe", "weighted_sum_probe", "attentive_probe", "aasist"])
def test_every_head_trains(kind):
    torch.manual_seed(0)
    config = tiny_config(classifier_type=kind, num_labels=2, probe_layer=0, freeze_encoder=kind != "linear")
    model = AudioMosaicForAudioClassification(config).train()
    out = model(torch.randn(2, 128, 128), labels=torch.tensor([0, 1]))
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if kind == "linear":
        assert "audiomosaic.layers.0.attention.qkv.weight" in trainable
    else:
        assert not model.audiomosaic.training  # frozen encoder stays in eval mode under model.train()
        assert {n for n in trainable if n.startswith("audiomosaic.")} == {
            "audiomosaic.fc_norm.weight", "audiomosaic.fc_norm.bias"}
        assert model.audiomosaic.layers[0].attention.qkv.weight.grad is None


def test_multi_label_and_class_weighted_losses():
    torch.manual_seed(0)
    x = torch.randn(3, 128, 128)
    multi = AudioMosaicForAudioClassification(tiny_config(problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]])
    out = multi(x, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))
    weighted = AudioMosaicForAudioClassification(tiny_config(num_labels=2, class_weights=[0.1, 0.9]))
    out = weighted(x, labels=torch.tensor([0, 1, 1]))
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 1]), weight=torch.tensor([0.1, 0.9]))
    torch.testing.assert_close(out.loss, expected)


def test_training_patch_masking_for_any_length():
    torch.manual_seed(0)
    model = AudioMosaicForAudioClassification(tiny_config(mask_time_prob=0.2, mask_freq_prob=0.2)).train()
    keep = model._training_keep_indices(torch.randn(2, 200, 128))
    assert keep.shape == (2, int(13 * 0.8) * int(8 * 0.8))
    assert model(torch.randn(2, 200, 128)).logits.shape == (2, 5)
    assert model.eval()._training_keep_indices(torch.randn(2, 200, 128)) is None


def test_aasist_requires_two_labels():
    with pytest.raises(ValueError, match="2 outputs"):
        AudioMosaicForAudioClassification(tiny_config(classifier_type="aasist", num_labels=3))


def test_unknown_classifier_type_lists_the_registered_heads():
    assert set(CLASSIFIER_HEADS) == set(CLASSIFIER_TYPES)  # the config accepts exactly the registered heads
    config = tiny_config()
    config.classifier_type = "mlp"  # an attribute set after validation, as a script might
    with pytest.raises(ValueError, match="Unknown classifier_type 'mlp'") as error:
        AudioMosaicForAudioClassification(config)
    assert all(repr(name) in str(error.value) for name in CLASSIFIER_HEADS)


# Non-encoder state-dict keys of each head type: the layout of converted checkpoints and saved folders.
HEAD_KEYS = {
    "linear": {"classifier.weight", "classifier.bias"},
    "layer_probe": {"classifier.weight", "classifier.bias"},
    "weighted_sum_probe": {"classifier.weight", "classifier.bias", "layer_weights"},
    "attentive_probe": {"classifier.weight", "classifier.bias", "attentive_probe.query", "attentive_probe.key.weight",
                        "attentive_probe.value.weight"}
    | {f"attentive_probe.layer_norms.{i}.{p}" for i in range(3) for p in ("weight", "bias")},
}


@pytest.mark.parametrize("kind", CLASSIFIER_TYPES)
def test_head_state_dict_keys(kind):
    model = AudioMosaicForAudioClassification(tiny_config(classifier_type=kind, num_labels=2))
    keys = {key for key in model.state_dict() if not key.startswith("audiomosaic.")}
    if kind == "aasist":
        assert keys and all(key.startswith("aasist.") for key in keys)
        assert "aasist.token_projection.weight" in keys and "aasist.master1" in keys
    else:
        assert keys == HEAD_KEYS[kind]


@pytest.mark.parametrize("kind", CLASSIFIER_TYPES)
def test_each_head_module_receives_its_encoder_output(kind):
    """The head registered for `classifier_type` gets the encoder output it reads (padding excluded from every mean)
    and its output becomes the logits."""
    torch.manual_seed(0)
    model = AudioMosaicForAudioClassification(tiny_config(classifier_type=kind, num_labels=2, probe_layer=0)).eval()
    assert isinstance(model.head, CLASSIFIER_HEADS[kind]) and model.head is getattr(model, kind)
    received, produced = [], []

    def record(module, args, output):
        received.append(args)
        produced.append(output)

    model.head.register_forward_hook(record)
    x = torch.randn(2, 100, 128)
    mask = torch.ones(2, 100, dtype=torch.long)
    mask[1, 40:] = 0
    with torch.no_grad():
        logits = model(x, attention_mask=mask).logits
        encoded = model.audiomosaic(x, attention_mask=mask, output_hidden_states=True)
    token_mask = encoded.token_mask
    blocks = encoded.hidden_states[1:]
    expected = {
        "linear": masked_mean(encoded.last_hidden_state, token_mask),
        "layer_probe": torch.stack([masked_mean(h, token_mask) for h in blocks], dim=1),
        "weighted_sum_probe": torch.stack([masked_mean(h, token_mask) for h in blocks], dim=1),
        "attentive_probe": torch.stack(
            [masked_mean(torch.nn.functional.layer_norm(h, (32,), eps=1e-6), token_mask) for h in blocks], dim=1),
        "aasist": encoded.last_hidden_state,
    }[kind]
    assert token_mask is not None and len(received) == 1
    torch.testing.assert_close(received[0][0], expected)
    if kind == "weighted_sum_probe":
        assert received[0][1] is model.layer_weights
    if kind == "aasist":
        torch.testing.assert_close(logits, produced[0])
    else:
        with torch.no_grad():
            torch.testing.assert_close(logits, model.classifier(model.audiomosaic.fc_norm(produced[0])))


def test_model_and_analysis_draw_masks_from_one_vocabulary():
    """Pretraining views, fine-tuning masking and analysis.py's maskings are the same function: same seed, same
    tokens."""
    device = torch.device("cpu")
    config = tiny_config(pretraining_masking="paper", mask_ratio_unstructured=0.5)
    pairs = [
        (lambda: pretraining_view_keep_indices(config, 0, 16, 2, device),
         lambda: masking_keep_indices("time", 2, 16, 8, time_ratio=0.6)),
        (lambda: pretraining_view_keep_indices(config, 1, 16, 2, device),
         lambda: masking_keep_indices("frequency", 2, 16, 8, freq_ratio=0.4)),
        (lambda: pretraining_view_keep_indices(tiny_config(pretraining_masking="unstructured"), 0, 16, 2, device),
         lambda: masking_keep_indices("unstructured", 2, 16, 8, unstructured_ratio=0.5)),
    ]
    classifier = AudioMosaicForAudioClassification(tiny_config(mask_time_prob=0.25, mask_freq_prob=0.5)).train()
    pairs.append((lambda: classifier._training_keep_indices(torch.zeros(2, 256, 128)),
                  lambda: masking_keep_indices("time_frequency", 2, 16, 8, time_ratio=0.25, freq_ratio=0.5)))
    for model_draw, analysis_draw in pairs:
        torch.manual_seed(5)
        drawn = model_draw()
        torch.manual_seed(5)
        assert torch.equal(drawn, analysis_draw())


def test_auto_classes_and_saved_auto_map(tmp_path):
    config = tiny_config()
    assert isinstance(transformers.AutoConfig.for_model("audiomosaic"), AudioMosaicConfig)
    assert isinstance(transformers.AutoModelForAudioClassification.from_config(config), AudioMosaicForAudioClassification)
    assert isinstance(transformers.AutoModelForPreTraining.from_config(config), AudioMosaicForPreTraining)
    model = AudioMosaicForAudioClassification(config)
    model.save_pretrained(tmp_path)
    saved = transformers.AutoConfig.from_pretrained(tmp_path)
    assert set(saved.auto_map) >= {"AutoConfig", "AutoModel", "AutoModelForAudioClassification"}
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "modeling_audiomosaic.py",
                                                     "configuration_audiomosaic.py"}
    encoder = transformers.AutoModel.from_pretrained(tmp_path)
    assert isinstance(encoder, AudioMosaicModel)
    torch.testing.assert_close(encoder.fc_norm.weight, model.audiomosaic.fc_norm.weight)


def test_resize_position_embeddings_updates_config():
    model = AudioMosaicModel(tiny_config(max_length=1024))
    model.resize_position_embeddings(128)
    assert model.config.max_length == 128 and model.embeddings.position_embeddings.shape == (1, 65, 32)
    assert model(torch.randn(1, 128, 128)).last_hidden_state.shape == (1, 65, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        model.resize_position_embeddings(100)
