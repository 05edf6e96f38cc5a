"""transformers' own shared tests, run against every AudioMosaic model class and the feature extractor the way
transformers tests its Audio Spectrogram Transformer (`tests/models/audio_spectrogram_transformer/`): a tiny config,
`ModelTesterMixin`, `ConfigTester` and `SequenceFeatureExtractionTestMixin`. The mixins come from the sdist of the
installed transformers version (see `fetch_transformers_tests.py`); without them (no network, no pip) the module is
skipped with the reason. Every common test skipped or overridden here says why in a one-line comment."""

import unittest
from unittest import mock

import numpy as np
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.auto import modeling_auto

from modeling_audiomosaic import (
    AudioMosaicConfig,
    AudioMosaicFeatureExtractor,
    AudioMosaicForAudioClassification,
    AudioMosaicForPreTraining,
    AudioMosaicLtuConfig,
    AudioMosaicLtuForConditionalGeneration,
    AudioMosaicModel,
)
from modeling_audiomosaic.configuration_audiomosaic import CLASSIFIER_TYPES
from modeling_audiomosaic.modeling_audiomosaic import CLASSIFIER_HEADS, AudioMosaicPatchEmbeddings


pytest.importorskip("parameterized", reason="transformers' common tests need `parameterized` (the [dev] extra)")
try:
    from fetch_transformers_tests import import_common

    test_modeling_common = import_common("test_modeling_common")
    test_configuration_common = import_common("test_configuration_common")
    test_sequence_feature_extraction_common = import_common("test_sequence_feature_extraction_common")
except (RuntimeError, ImportError) as error:
    pytest.skip(f"transformers' common tests are not available: {error}", allow_module_level=True)

ModelTesterMixin = test_modeling_common.ModelTesterMixin
floats_tensor = test_modeling_common.floats_tensor
ids_tensor = test_modeling_common.ids_tensor
ConfigTester = test_configuration_common.ConfigTester
SequenceFeatureExtractionTestMixin = test_sequence_feature_extraction_common.SequenceFeatureExtractionTestMixin

# Classes registered at import time are missing from transformers' static name tables, which the mixins read to tell
# a base model (no loss expected) from a head model (labels prepared, loss trained); declared here as they would be.
MODEL_NAMES = {
    "MODEL_MAPPING_NAMES": "AudioMosaicModel",
    "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES": "AudioMosaicForAudioClassification",
    "MODEL_FOR_PRETRAINING_MAPPING_NAMES": "AudioMosaicForPreTraining",
}


class AudioMosaicModelTester:
    """A tiny AudioMosaic: 2 layers of width 32 over 64 frames x 32 Mel bins, i.e. 4 x 2 patches of 16 + cls."""

    def __init__(self, parent, batch_size=4, frames=64, num_mel_bins=32, patch_size=16, hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, num_labels=3,
                 classifier_type="linear", return_loss=True):
        self.parent = parent
        self.batch_size = batch_size
        self.frames = frames
        self.num_mel_bins = num_mel_bins
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.classifier_type = classifier_type
        # A head with its own outputs (AASIST: bona fide / spoof) fixes the label count.
        self.num_labels = CLASSIFIER_HEADS[classifier_type].num_outputs or num_labels
        self.return_loss = return_loss
        self.seq_length = 1 + (frames // patch_size) * (num_mel_bins // patch_size)
        self.is_training = True

    def get_config(self, **overrides) -> AudioMosaicConfig:
        values = dict(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            patch_size=self.patch_size, num_mel_bins=self.num_mel_bins, max_length=self.frames,
            projection_hidden_size=16, projection_dim=8, num_labels=self.num_labels,
            classifier_type=self.classifier_type, attn_implementation="eager",
        )
        return AudioMosaicConfig(**{**values, **overrides})

    def prepare_config_and_inputs_for_common(self):
        inputs = {"input_values": floats_tensor([self.batch_size, self.frames, self.num_mel_bins])}
        if not self.return_loss:
            inputs["return_loss"] = False
        return self.get_config(), inputs


class AudioMosaicCommonTests(ModelTesterMixin):
    """What every AudioMosaic model class shares in the mixin."""

    # The weight-init test dates a model by a copyright line its config file lacks; AudioMosaic is new, so run it.
    test_can_init_all_missing_weights_before_2023 = True
    # The patch embeddings are a Conv2d over the spectrogram, not a token table: nothing to resize (as AST).
    test_resize_embeddings = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.name_tables = [
            mock.patch.dict(getattr(modeling_auto, table), {"audiomosaic": name}) for table, name in MODEL_NAMES.items()
        ]
        for table in cls.name_tables:
            table.start()

    @classmethod
    def tearDownClass(cls):
        for table in cls.name_tables:
            table.stop()
        super().tearDownClass()

    # Overridden as AST does: the input embeddings are the patch Conv2d module and there are no output embeddings.
    def test_model_get_set_embeddings(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), AudioMosaicPatchEmbeddings)
            self.assertIsNone(model.get_output_embeddings())


class AudioMosaicModelTest(AudioMosaicCommonTests, unittest.TestCase):
    all_model_classes = (AudioMosaicModel, AudioMosaicForAudioClassification)

    def setUp(self):
        self.model_tester = AudioMosaicModelTester(self)
        self.config_tester = AudioMosaicConfigTester(self, config_class=AudioMosaicConfig, has_text_modality=False,
                                                     hidden_size=32, num_attention_heads=4, num_hidden_layers=2)

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = AudioMosaicModel(config).eval()
        with torch.no_grad():
            output = model(**inputs)
        tester = self.model_tester
        self.assertEqual(output.last_hidden_state.shape, (tester.batch_size, tester.seq_length, tester.hidden_size))
        self.assertEqual(output.pooler_output.shape, (tester.batch_size, tester.hidden_size))

    def test_for_audio_classification(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = AudioMosaicForAudioClassification(config).eval()
        labels = ids_tensor([self.model_tester.batch_size], self.model_tester.num_labels)
        with torch.no_grad():
            output = model(**inputs, labels=labels)
        self.assertEqual(output.logits.shape, (self.model_tester.batch_size, self.model_tester.num_labels))
        self.assertEqual(output.loss.ndim, 0)


class AudioMosaicForPreTrainingTest(AudioMosaicCommonTests, unittest.TestCase):
    all_model_classes = (AudioMosaicForPreTraining,)

    def setUp(self):
        self.model_tester = AudioMosaicModelTester(self)
        # Hidden states and attentions come per view (view 0 and view 1): asking for them adds two output fields.
        self.model_tester.num_hidden_states_types = 2

    # NT-Xent's logits compare each clip with its batch by design: the check runs on every per-clip output instead.
    def test_batching_equivalence(self):
        self.model_tester.return_loss = False
        super().test_batching_equivalence()

    def test_model(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = AudioMosaicForPreTraining(config).train()
        output = model(**inputs)
        batch_size = self.model_tester.batch_size
        self.assertEqual(output.logits.shape, (2 * batch_size, 2 * batch_size - 1))
        self.assertEqual(output.projection_view0.shape, (batch_size, config.projection_dim))
        self.assertEqual(output.loss.ndim, 0)


class AudioMosaicHeadTest(AudioMosaicCommonTests):
    """The classification model with a head other than the linear one, which `AudioMosaicModelTest` covers: the
    probes read every block (so they need the hidden states themselves) and AASIST is a network of its own."""

    all_model_classes = (AudioMosaicForAudioClassification,)
    classifier_type = None

    def setUp(self):
        self.model_tester = AudioMosaicModelTester(self, classifier_type=self.classifier_type)
        # Heads read the encoder's output, whose eager/SDPA agreement AudioMosaicModelTest checks in 25 variants.
        if self._testMethodName.startswith("test_eager_matches_sdpa_inference"):
            self.skipTest("the encoder's eager/SDPA agreement is covered by AudioMosaicModelTest")


class AudioMosaicLayerProbeTest(AudioMosaicHeadTest, unittest.TestCase):
    classifier_type = "layer_probe"


class AudioMosaicWeightedSumProbeTest(AudioMosaicHeadTest, unittest.TestCase):
    classifier_type = "weighted_sum_probe"


class AudioMosaicAttentiveProbeTest(AudioMosaicHeadTest, unittest.TestCase):
    classifier_type = "attentive_probe"


class AudioMosaicAASISTTest(AudioMosaicHeadTest, unittest.TestCase):
    classifier_type = "aasist"
    # By design no gradient reaches `bn1` (output discarded, as the authors') nor `fc_norm` (AASIST reads the tokens).
    test_all_params_have_gradient = False

    # AASIST's output layer is fixed at two classes (bona fide / spoof): no checkpoint with another label count exists.
    @unittest.skip(reason="the AASIST head has exactly 2 outputs, so `num_labels` cannot be changed on loading")
    def test_can_load_ignoring_mismatched_shapes(self):
        pass


def test_every_head_is_covered():
    tested = {"linear"} | {case.classifier_type for case in AudioMosaicHeadTest.__subclasses__()}
    assert tested == set(CLASSIFIER_TYPES)


class AudioMosaicConfigTester(ConfigTester):
    # The common-kwargs table it compares against lives in tests/utils, which the sdist lacks (empty stand-in).
    def check_config_arguments_init(self):
        pass


class AudioMosaicFeatureExtractionTester:
    """The padding mixin's inputs are sequences of `feature_size`-wide frames; `feature_size` is the Mel-bin count, so
    they are log-Mel frames (100 to 800 of them), which `pad` batches into `input_values`."""

    def __init__(self, parent, batch_size=7, min_seq_length=100, max_seq_length=800, feature_size=128):
        self.parent = parent
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.feature_size = feature_size

    def prepare_feat_extract_dict(self) -> dict:
        return {"feature_size": self.feature_size, "padding_value": 0.0, "sampling_rate": 16000,
                "return_attention_mask": True, "do_normalize": True}

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        rng = np.random.default_rng(0)
        if equal_length:
            lengths = [self.max_seq_length] * self.batch_size
        else:
            lengths = range(self.min_seq_length, self.max_seq_length, self.seq_length_diff)
        speech_inputs = [rng.random((length, self.feature_size)) for length in lengths]
        return speech_inputs if numpify else [inputs.tolist() for inputs in speech_inputs]


class AudioMosaicFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = AudioMosaicFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = AudioMosaicFeatureExtractionTester(self)


class AudioMosaicLtuModelTester:
    """A tiny audio-language model: the tiny encoder (2 audio tokens per 64-frame clip) before a 2-layer LLaMA."""

    def __init__(self, parent, batch_size=7, text_length=9, vocab_size=50, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = text_length
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.audio_token_id = vocab_size  # one past the vocabulary, as `from_audio_text_pretrained` picks it
        self.audio_tester = AudioMosaicModelTester(parent, batch_size=batch_size)
        self.is_training = True

    def get_config(self) -> AudioMosaicLtuConfig:
        text_config = LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=37,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
        return AudioMosaicLtuConfig(audio_config=self.audio_tester.get_config(drop_path_rate=0.0),
                                    text_config=text_config, audio_token_id=self.audio_token_id,
                                    attn_implementation="eager")

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 3) + 3
        input_ids[:, : config.num_audio_tokens] = self.audio_token_id  # the authors' layout: audio tokens first
        audio = self.audio_tester
        inputs = {
            "input_ids": input_ids,
            "input_values": floats_tensor([self.batch_size, audio.frames, audio.num_mel_bins]),
            "attention_mask": torch.ones_like(input_ids),
        }
        return config, inputs


class AudioMosaicLtuTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (AudioMosaicLtuForConditionalGeneration,)
    _is_composite = True
    # The weight-init test dates a model by a copyright line its config file lacks; AudioMosaic is new, so run it.
    test_can_init_all_missing_weights_before_2023 = True
    # The audio goes in beside the text: tests that build their own inputs from `input_ids` keep it.
    additional_model_inputs = ["input_values"]
    # The mixin takes the feature width from `audio_config.projection_dim` (ours: the projector's); see below.
    skip_test_audio_features_output_shape = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.name_table = mock.patch.dict(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                         {"audiomosaic_ltu": "AudioMosaicLtuForConditionalGeneration"})
        cls.name_table.start()

    @classmethod
    def tearDownClass(cls):
        cls.name_table.stop()
        super().tearDownClass()

    def setUp(self):
        self.model_tester = AudioMosaicLtuModelTester(self)

    def test_audio_features(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = AudioMosaicLtuForConditionalGeneration(config).eval()
        with torch.no_grad():
            features = model.get_audio_features(inputs["input_values"])
        batch_size, audio = self.model_tester.batch_size, self.model_tester.audio_tester
        self.assertEqual(features.last_hidden_state.shape, (batch_size, audio.seq_length, audio.hidden_size))
        self.assertEqual(features.pooler_output.shape,
                         (batch_size, config.num_audio_tokens, config.text_config.hidden_size))

    # The stand-in `GenerationTesterMixin` (not in the sdist) has no tests; tests/test_ltu.py covers `generate`.
    @unittest.skip(reason="transformers' generation tests are not in the sdist (see fetch_transformers_tests.py)")
    def test_generation_tester_mixin_inheritance(self):
        pass

    # The audio placeholder id lies one past the vocabulary by design, so `get_input_embeddings()(input_ids)` fails.
    @unittest.skip(reason="the audio placeholder id is outside the language model's vocabulary by design")
    def test_inputs_embeds(self):
        pass

    # The language model is a whole `AutoModelForCausalLM`, as in the authors' LTU: there is no base model to prefix.
    @unittest.skip(reason="the LTU composite wraps a complete causal LM; it has no base model of its own")
    def test_model_base_model_prefix(self):
        pass

    # The test clamps every id into the shrunk vocabulary, which turns the audio placeholders into text tokens.
    @unittest.skip(reason="clamping ids into a shrunk vocabulary removes the audio placeholders the inputs need")
    def test_resize_tokens_embeddings(self):
        pass

    # As above: the untied variant clamps the ids the same way.
    @unittest.skip(reason="clamping ids into a shrunk vocabulary removes the audio placeholders the inputs need")
    def test_resize_embeddings_untied(self):
        pass
