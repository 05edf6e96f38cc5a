"""CUDA checks, skipped on machines without a GPU (CI has none): the converted fixture classifier gives the authors'
logits on the GPU in float32, bf16 autocast stays close, and a pretraining step runs under bf16 autocast."""

import pytest
import torch
from safetensors.torch import load_file

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicForAudioClassification, AudioMosaicForPreTraining
from modeling_audiomosaic.convert_official import convert


pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_fixture_logits_on_cuda(fixtures_dir, tmp_path, attn_implementation):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    folder = convert(fixtures_dir / "classifier_long.safetensors", tmp_path / "model", num_heads=4)
    model = AudioMosaicForAudioClassification.from_pretrained(folder, attn_implementation=attn_implementation)
    model = model.cuda().eval()
    inputs = load_file(fixtures_dir / "inputs.safetensors")["input_long"].cuda()
    reference = load_file(fixtures_dir / "classifier_long_eval_io.safetensors")["logits"]
    with torch.no_grad():
        logits = model(inputs).logits.cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(inputs).logits.float().cpu()
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    assert (bf16 - reference).abs().max().item() < 0.1


def test_bf16_pretraining_step_on_cuda():
    torch.manual_seed(0)
    config = AudioMosaicConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                               max_length=1024, projection_hidden_size=64, projection_dim=32)
    model = AudioMosaicForPreTraining(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(torch.randn(8, 1024, 128, device="cuda"))
    out.loss.backward()
    optimizer.step()
    assert torch.isfinite(out.loss) and out.logits.shape == (16, 15)


def test_spectral_device_path_on_cuda_matches_cpu():
    """The counter-based draws are the same on every device: the views on the GPU equal the CPU run of the same
    device path up to float rounding (a dense Mel product there, grouped ones on CPU)."""
    import numpy as np

    from audiomosaic_training.augment import sample_seed
    from audiomosaic_training.spectral_augment import SpectralTwoViewTransform, pad_clips
    from modeling_audiomosaic import AudioMosaicFeatureExtractor

    transform = SpectralTwoViewTransform(AudioMosaicFeatureExtractor.from_preset("speechcommands"), "official")
    rng = np.random.default_rng(0)
    batch, lengths = pad_clips([rng.normal(0, 0.1, 12000 + 700 * i).astype(np.float32) for i in range(6)])
    seeds = torch.tensor([sample_seed(5, 0, i) for i in range(6)])
    on_cpu = transform.views_from_batch(batch, lengths, seeds)
    on_gpu = transform.views_from_batch(batch.cuda(), lengths.cuda(), seeds.cuda())
    for cpu_view, gpu_view in zip(on_cpu, on_gpu, strict=True):
        assert gpu_view.device.type == "cuda"
        torch.testing.assert_close(gpu_view.cpu(), cpu_view, atol=2e-3, rtol=0)


def test_device_batches_copy_ahead_on_a_side_stream():
    import numpy as np

    from audiomosaic_training import pretrain
    from audiomosaic_training.two_view_data import DeviceBatches
    from modeling_audiomosaic import AudioMosaicFeatureExtractor

    data_args = pretrain.DataArguments(dataset="x", augmentation="official", augmentation_backend="spectral")
    views = pretrain.build_views(data_args, AudioMosaicFeatureExtractor.from_preset("speechcommands"),
                                 torch.device("cuda"))
    rng = np.random.default_rng(1)
    host = [views.collate([{"waveform": rng.normal(0, 0.1, 16000).astype(np.float32), "seed": 4 * b + i}
                           for i in range(4)]) for b in range(3)]
    pinned = [{key: value.pin_memory() for key, value in batch.items()} for batch in host]
    handed = list(DeviceBatches(iter(pinned), views, torch.device("cuda")))
    assert len(handed) == 3
    for batch, original in zip(handed, host, strict=True):
        expected = views.transform.views_from_batch(*(original[key].cuda() for key in ("waveforms", "lengths",
                                                                                        "seeds")))
        assert batch["input_values"].device.type == "cuda"
        assert torch.equal(batch["input_values"], expected[0]) and torch.equal(batch["input_values_view1"], expected[1])


def test_compiled_pretraining_resumes_and_exports(tmp_path):
    """`--torch_compile` (Accelerate's dynamo plugin) with the device path: a run stopped after 2 steps and resumed
    to 4 exports an encoder that loads with AutoModel."""
    import numpy as np
    import soundfile
    from transformers import AutoModel

    from audiomosaic_training import pretrain

    rng = np.random.default_rng(0)
    for i in range(16):
        soundfile.write(tmp_path / f"clip_{i}.wav", rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
    (tmp_path / "clips.csv").write_text("audio\n" + "\n".join(f"clip_{i}.wav" for i in range(16)) + "\n")
    arguments = ["--dataset", str(tmp_path / "clips.csv"), "--output_dir", str(tmp_path / "run"), "--recipe",
                 "pretrain_tiny_cpu", "--augmentation_backend", "spectral", "--per_device_train_batch_size", "4",
                 "--save_steps", "2", "--warmup_steps", "1", "--probe_size", "0", "--torch_compile",
                 "--mixed_precision", "bf16", "--disable_tqdm", "--use_cpu", "false"]
    assert pretrain.main([*arguments, "--max_steps", "2"]).global_step == 2
    state = pretrain.main([*arguments, "--max_steps", "4"])
    assert state.global_step == 4 and state.nonfinite_steps == 0
    encoder = AutoModel.from_pretrained(tmp_path / "run")
    assert encoder.config.hidden_size > 0
