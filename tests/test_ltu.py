"""The AudioMosaic audio-language model (LTU layout): parity with the authors' LTU code on the tiny fixture, through
the converter of a stand-in release laid out from the fixture tensors; generation; processor placeholder expansion
and label masking; save/load round trips (also with remote code)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoProcessor, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import modeling_audiomosaic  # noqa: F401 - registers the Auto classes
from modeling_audiomosaic import (
    AudioMosaicConfig,
    AudioMosaicFeatureExtractor,
    AudioMosaicLtuConfig,
    AudioMosaicLtuForConditionalGeneration,
    AudioMosaicLtuProcessor,
    pool_audio_tokens,
)
from modeling_audiomosaic import cli
from modeling_audiomosaic.convert_ltu import convert_ltu, load_release_weights


peft = pytest.importorskip("peft")
tokenizers = pytest.importorskip("tokenizers")

PARITY_TABLE: dict[str, float] = {}
ATOL = 1e-5
NUM_AUDIO = 32


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose ids cover [0, vocab_size): <unk>/<s>/</s> = 0/1/2, then w3, w4, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def record(name: str, ours: torch.Tensor, reference: torch.Tensor) -> float:
    error = (ours.detach().float() - reference.float()).abs().max().item()
    PARITY_TABLE[name] = error
    return error


@pytest.fixture(scope="module")
def converted(ltu_fixtures_dir, tmp_path_factory):
    """A stand-in release (extra_weights.bin torch.save'd from the fixture tensors) and base LLaMA folder (fixture
    weights + a word-level tokenizer), converted with `convert_ltu`."""
    root = tmp_path_factory.mktemp("ltu")
    release, base, out = root / "release", root / "base", root / "converted"
    release.mkdir()
    torch.save(load_file(ltu_fixtures_dir / "weights_extra.safetensors"), release / "extra_weights.bin")
    llama_config = LlamaConfig(**json.loads((ltu_fixtures_dir / "llama_config.json").read_text()))
    llama = LlamaForCausalLM(llama_config)
    llama.load_state_dict(load_file(ltu_fixtures_dir / "llama_base.safetensors"), strict=True)
    llama.save_pretrained(base)
    word_tokenizer(llama_config.vocab_size).save_pretrained(base)
    encoder_heads = json.loads((ltu_fixtures_dir / "encoder_config.json").read_text())["num_heads"]
    return convert_ltu(release, out, base, num_heads=encoder_heads)


@pytest.fixture(scope="module")
def fixture_tensors(ltu_fixtures_dir):
    return load_file(ltu_fixtures_dir / "inputs.safetensors"), load_file(ltu_fixtures_dir / "outputs.safetensors")


@pytest.fixture(scope="module")
def peft_model(converted):
    model = AudioMosaicLtuForConditionalGeneration.from_pretrained(converted).eval()
    return peft.PeftModel.from_pretrained(model, converted / "adapter").eval()


def with_placeholders(inputs: dict, audio_token_id: int) -> dict:
    """The authors' batch in placeholder form: 32 audio placeholders, then the left-padded text; their mask and
    their (not pad-aware) positions."""
    batch_size, text_length = inputs["input_ids"].shape
    placeholders = torch.full((batch_size, NUM_AUDIO), audio_token_id)
    return {
        "input_ids": torch.cat([placeholders, inputs["input_ids"]], dim=1),
        "attention_mask": inputs["attention_mask"].long(),
        "position_ids": torch.arange(NUM_AUDIO + text_length)[None].expand(batch_size, -1),
        "input_values": inputs["fbank"],
    }


def test_converted_folder(converted):
    names = {p.name for p in converted.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_audiomosaic_ltu.py", "modeling_audiomosaic_ltu.py",
            "modeling_audiomosaic.py", "configuration_audiomosaic.py", "processor_config.json", "adapter"} <= names
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "audiomosaic_ltu" and config["audio_token_id"] == 1000
    assert config["auto_map"]["AutoModelForCausalLM"].endswith("AudioMosaicLtuForConditionalGeneration")
    adapter = json.loads((converted / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (8, 16)
    counts = json.loads((converted / "conversion.json").read_text())
    assert (counts["encoder_tensors"], counts["projector_tensors"], counts["lora_tensors"]) == (34, 2, 8)


def test_parity_with_authors_ltu(peft_model, fixture_tensors):
    inputs, outputs = fixture_tensors
    model = peft_model.base_model.model
    batch = with_placeholders(inputs, model.config.audio_token_id)
    with torch.no_grad():
        tokens = model.audio_tower(batch["input_values"]).last_hidden_state
        assert record("encoder_tokens", model.audio_tower.fc_norm(tokens), outputs["encoder_tokens"]) < ATOL
        pooled = pool_audio_tokens(model.audio_tower.fc_norm(tokens)[:, 1:], 8, 2, "official")
        assert record("audio_pooled", pooled / 50, outputs["audio_pooled"]) < ATOL
        audio_tokens = model.get_audio_features(batch["input_values"]).pooler_output
        assert record("audio_tokens", audio_tokens, outputs["audio_tokens"]) < ATOL

        labels = torch.cat([torch.full((2, NUM_AUDIO), -100), inputs["labels"]], dim=1)
        result = peft_model(**batch, labels=labels)
        assert record("logits", result.logits[:, NUM_AUDIO:], outputs["logits"]) < ATOL
        assert record("loss_fullseq_convention", result.loss, outputs["loss_fullseq_convention"]) < ATOL
        # The authors never score the first text position (BOS); masking its label gives their loss exactly.
        labels[:, NUM_AUDIO] = -100
        assert record("loss", peft_model(**batch, labels=labels).loss, outputs["loss"]) < ATOL
        with peft_model.disable_adapter():
            no_lora = peft_model(**batch, labels=labels)
        assert record("logits_no_lora", no_lora.logits[:, NUM_AUDIO:], outputs["logits_no_lora"]) < ATOL
        assert record("loss_no_lora", no_lora.loss, outputs["loss_no_lora"]) < ATOL
        assert (outputs["logits"] - outputs["logits_no_lora"]).abs().max() > 0.1  # the adapter really is applied

        shuffle = outputs["train_perm_ids_shuffle"]
        shuffled = model.get_audio_features(batch["input_values"], patch_order=shuffle).pooler_output
        assert record("train_perm_audio_tokens", shuffled, outputs["train_perm_audio_tokens"]) < ATOL


def test_official_pooling_mixes_time_as_documented():
    """Token k of the official pooling = mean of the patches with t mod 8 == k // 4 and f in {2(k mod 4), +1}; the
    time pooling gives contiguous 2-patch time spans averaged over frequency."""
    time_patches, freq_patches = 64, 8
    values = torch.randn(1, time_patches * freq_patches, 3)
    grid = values.view(time_patches, freq_patches, 3)
    official = pool_audio_tokens(values, freq_patches, 2, "official")[0]
    for k in (0, 5, 31):
        expected = grid[(k // 4)::8, 2 * (k % 4): 2 * (k % 4) + 2].mean(dim=(0, 1))
        assert torch.allclose(official[k], expected, atol=1e-6)
    by_time = pool_audio_tokens(values, freq_patches, 2, "time")[0]
    assert torch.allclose(by_time[3], grid[6:8].mean(dim=(0, 1)), atol=1e-6)


def test_generate_from_converted_release(converted, peft_model):
    processor = AutoProcessor.from_pretrained(converted)
    assert isinstance(processor, AudioMosaicLtuProcessor) and processor.num_audio_tokens == NUM_AUDIO
    waveforms = [np.random.default_rng(seed).normal(0, 0.1, 16000).astype(np.float32) for seed in (0, 1)]
    prompts = [processor.build_prompt("w10 w11 w12"), processor.build_prompt("w13")]
    inputs = processor(text=prompts, audio=waveforms, sampling_rate=16000)
    assert inputs["input_values"].shape == (2, 1024, 128)
    generated = peft_model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape == (2, inputs["input_ids"].shape[1] + 5)
    new_tokens = generated[:, inputs["input_ids"].shape[1]:]
    # Greedy generation with the KV cache equals re-running the full sequence each step (audio in every pass).
    with torch.no_grad():
        sequence = inputs["input_ids"]
        mask = inputs["attention_mask"]
        for _ in range(5):
            logits = peft_model(input_ids=sequence, attention_mask=mask, input_values=inputs["input_values"]).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert torch.equal(new_tokens, sequence[:, inputs["input_ids"].shape[1]:])
    assert all(isinstance(text, str) for text in processor.batch_decode(new_tokens, skip_special_tokens=True))


def tiny_processor(padding_side: str = "left", num_audio_tokens: int = 4) -> AudioMosaicLtuProcessor:
    tokenizer = word_tokenizer(50)
    tokenizer.pad_token, tokenizer.padding_side = "<unk>", padding_side
    tokenizer.add_special_tokens({"additional_special_tokens": ["<audio>"]})
    extractor = AudioMosaicFeatureExtractor.from_preset("speechcommands")
    return AudioMosaicLtuProcessor(extractor, tokenizer, num_audio_tokens=num_audio_tokens,
                                   prompt_template="w3 {instruction} w4 ")


def test_processor_expands_placeholders_and_masks_labels():
    processor = tiny_processor()
    audio_id = processor.audio_token_id
    clips = [np.zeros(16000, np.float32), np.ones(8000, np.float32) * 0.1]
    prompts = [processor.build_prompt("w5"), processor.build_prompt("w6 w7")]
    batch = processor(text=prompts, audio=clips, answers=["w8", "w9 w10"], sampling_rate=16000)
    # row 1: <audio>x4 <s> w3 w6 w7 w4 w9 w10 </s> (12 tokens); row 0 is one token shorter and left-padded.
    assert batch["input_ids"][1].tolist() == [audio_id] * 4 + [1, 3, 6, 7, 4, 9, 10, 2]
    assert batch["input_ids"][0].tolist() == [0, 0] + [audio_id] * 4 + [1, 3, 5, 4, 8, 2]
    assert batch["attention_mask"][0].tolist() == [0, 0] + [1] * 10
    assert batch["labels"][1].tolist() == [-100] * 5 + [3, 6, 7, 4, 9, 10, 2]
    assert batch["labels"][0].tolist() == [-100] * 7 + [3, 5, 4, 8, 2]
    assert batch["input_values"].shape == (2, 128, 128)

    answer_only = processor(text=prompts, audio=clips, answers=["w8", "w9 w10"], sampling_rate=16000,
                            train_on_prompt=False, pad_to_multiple_of=8)
    assert answer_only["labels"].shape[1] == 16
    assert answer_only["labels"][1, -3:].tolist() == [9, 10, 2] and (answer_only["labels"][1, :-3] == -100).all()

    with pytest.raises(ValueError, match="placeholder"):
        processor(text=prompts, audio=clips[:1], sampling_rate=16000)


def tiny_model(audio_pooling: str = "official") -> AudioMosaicLtuForConditionalGeneration:
    torch.manual_seed(0)
    config = AudioMosaicLtuConfig(
        audio_config=AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, max_length=128, drop_path_rate=0.0),
        text_config=LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                                eos_token_id=2),
        audio_token_id=50, audio_pooling=audio_pooling)
    return AudioMosaicLtuForConditionalGeneration(config).eval()


def test_model_masks_audio_labels_and_checks_placeholders():
    model = tiny_model()
    assert model.config.num_audio_tokens == 4
    batch = tiny_processor()(text=[tiny_processor().build_prompt("w5")], audio=[np.zeros(16000, np.float32)],
                             answers=["w8"], sampling_rate=16000)
    labels_unmasked = batch["input_ids"].clone()
    with torch.no_grad():
        masked = model(**{**batch, "labels": labels_unmasked}).loss
        logits = model(**batch).logits
    # Scoring the placeholder ids would need logits for id 50, which the 50-word LM does not have: the model drops
    # them itself, so the loss equals the one on labels with -100 at the placeholders (and BOS kept).
    reference = labels_unmasked.masked_fill(labels_unmasked == 50, -100)
    expected = torch.nn.functional.cross_entropy(logits[0, :-1], reference[0, 1:], ignore_index=-100)
    assert masked.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="placeholders"):
        model(input_ids=batch["input_ids"][:, 1:], input_values=batch["input_values"])
    with pytest.raises(ValueError, match="no `input_values`"):
        model(input_ids=batch["input_ids"])


def test_save_load_round_trip_and_remote_code(tmp_path):
    model = tiny_model(audio_pooling="time")
    processor = tiny_processor()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, AudioMosaicLtuForConditionalGeneration)
    assert reloaded.config.audio_pooling == "time" and reloaded.config.text_config.model_type == "llama"
    batch = processor(text=[processor.build_prompt("w5")], audio=[np.zeros(16000, np.float32)], sampling_rate=16000)
    with torch.no_grad():
        expected = model(**batch).logits
        assert torch.equal(reloaded(**batch).logits, expected)
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert reloaded_processor.audio_token_id == processor.audio_token_id
    assert reloaded_processor.prompt_template == "w3 {instruction} w4 "
    np.save(tmp_path / "input_ids.npy", batch["input_ids"].numpy())
    np.save(tmp_path / "input_values.npy", batch["input_values"].numpy())
    np.save(tmp_path / "expected.npy", expected.numpy())

    # A Python where this package cannot be imported loads the folder through auto_map.
    script = textwrap.dedent(f"""
        import sys
        sys.modules["modeling_audiomosaic"] = None
        import numpy as np, torch
        from transformers import AutoModelForCausalLM
        folder = {str(tmp_path)!r}
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(np.load(folder + "/input_ids.npy")),
                           input_values=torch.from_numpy(np.load(folder + "/input_values.npy"))).logits
        assert torch.equal(logits, torch.from_numpy(np.load(folder + "/expected.npy")))
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        batch = processor(text=[processor.build_prompt("w5")], audio=[np.zeros(16000, np.float32)],
                          sampling_rate=16000)
        assert torch.equal(batch["input_ids"], torch.from_numpy(np.load(folder + "/input_ids.npy")))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]


class NotATensor:
    """An object whose unpickling needs this module's code."""


def test_converter_refuses_pickles_that_need_code(tmp_path, capsys):
    torch.save({"weights": NotATensor()}, tmp_path / "extra_weights.bin")
    with pytest.raises(ValueError, match="needs code"):
        load_release_weights(tmp_path)
    base = tmp_path / "base"
    LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2).save_pretrained(base)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["convert-ltu", str(tmp_path), str(tmp_path / "out"), "--base-model", str(base)])
    assert exit_info.value.code == 1
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and "needs code to be unpickled" in error_lines[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no extra_weights.bin"):
        load_release_weights(tmp_path / "empty")


def test_training_curriculum_two_stages(tmp_path, synthetic_clips):
    """Stage 1 (projector + norms, no LoRA) then stage 2 (encoder + projector + LoRA) with training/ltu.py on a few
    clips: the LM stays frozen, the stage-2 encoder moves, the adapter is written, answers are scored."""
    from conftest import write_subset
    from audiomosaic_training import ltu as training_ltu

    rows = write_subset(synthetic_clips, ["low", "high"], 3, "audio", tmp_path / "rows.csv")
    base = tmp_path / "base"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                                 eos_token_id=2)).save_pretrained(base)
    word_tokenizer(50).save_pretrained(base)
    common = ["--dataset", str(rows), "--instruction", "w5 w6", "--answer_column", "label", "--fold_column", "fold",
              "--train_folds", "1", "--max_steps", "2", "--per_device_train_batch_size", "3", "--use_cpu", "true",
              "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--bf16", "false"]
    training_ltu.main(["--recipe", "ltu_stage1_projector", "--language_model", str(base),
                       "--audio_config_overrides", "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,"
                       "intermediate_size=64,max_length=128", "--feature_extractor_preset", "speechcommands",
                       "--output_dir", str(tmp_path / "stage1"), *common])
    results = training_ltu.main(["--recipe", "ltu_stage2_all_cla", "--model_name_or_path",
                                 str(tmp_path / "stage1"), "--output_dir", str(tmp_path / "stage2"),
                                 "--eval_folds", "5", "--per_device_eval_batch_size", "4", *common])
    assert results["eval"]["num_eval"] == 6 and 0.0 <= results["eval"]["accuracy"] <= 1.0
    assert (tmp_path / "stage2" / "adapter" / "adapter_model.safetensors").is_file()
    stage1, stage2 = (load_file(tmp_path / name / "model.safetensors") for name in ("stage1", "stage2"))
    base_weights = load_file(base / "model.safetensors")
    assert all(torch.equal(stage2[f"language_model.{key}"], value) for key, value in base_weights.items())
    assert not torch.equal(stage1["audio_tower.layers.0.mlp.fc1.weight"], stage2["audio_tower.layers.0.mlp.fc1.weight"])
    adapter = load_file(tmp_path / "stage2" / "adapter" / "adapter_model.safetensors")
    assert any("lora_A" in key for key in adapter)
    # Stages 3 and 4 (same trainable set, other data) continue from the previous stage.
    for previous, stage in (("stage2", "ltu_stage3_all_closed"), ("stage3", "ltu_stage4_all_mix")):
        results = training_ltu.main(["--recipe", stage, "--model_name_or_path", str(tmp_path / previous),
                                     "--output_dir", str(tmp_path / stage.split("_")[1]), *common, "--max_steps", "1"])
        assert math.isfinite(results["train"]["train_loss"])
        assert (tmp_path / stage.split("_")[1] / "adapter" / "adapter_model.safetensors").is_file()
