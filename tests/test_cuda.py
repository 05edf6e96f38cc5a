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
