"""Embed audio files, folders or CSV lists with an AudioMosaic encoder. Output: (clips, dim) pooled embeddings
(fc_norm of the token mean), or (clips, layers, dim) per-layer token means with --layers; a .npy also gets a .json
with the file order, a .safetensors keeps it in its metadata.

    audiomosaic embed clips/ --model runs/pretrain --output embeddings.npy
    audiomosaic embed long.wav --model runs/pretrain --frames --output frames.safetensors
"""

import argparse
import json
import sys
from pathlib import Path

from .. import inputs
from ..validation import output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, folders, or CSV/JSON/Parquet lists")
    parser.add_argument("--output", required=True, type=output_file, help="embeddings.npy or embeddings.safetensors")
    parser.add_argument("--layers", default="pooled",
                        help="'pooled' (default), 'all' (embedding output + every block) or indices, e.g. '0,6,12'")
    parser.add_argument("--no_fc_norm", action="store_true", help="pooled: the token mean without fc_norm")
    parser.add_argument("--mask_padding", action="store_true",
                        help="exclude padded frames from attention and pooling (the checkpoints were trained with "
                             "padding included)")
    parser.add_argument("--frames", action="store_true",
                        help="time-aligned embeddings: one vector per 160 ms patch row (tokens of the row averaged "
                             "over frequency; --layers picks the block, default the last), all files' rows "
                             "concatenated, with their centre times and clip index (in the .json / .safetensors); "
                             "long clips are windowed (--window_hop must then be a multiple of 16) and each row "
                             "comes from the window where it is most central")
    inputs.add_input_arguments(parser, inference=True)


def main(argv: list[str] | None = None) -> Path:
    return run(inputs.command_parser("embed", __doc__, add_arguments).parse_args(argv))


def parse_layers(spec: str, num_entries: int) -> list[int] | None:
    """None for the pooled output, else indices into (embedding output, block 1, ..., block depth)."""
    if spec == "pooled":
        return None
    if spec == "all":
        return list(range(num_entries))
    layers = []
    for part in spec.split(","):
        try:
            index = int(part)
        except ValueError:
            raise ValueError(f"--layers: expected 'pooled', 'all' or comma-separated block indices such as '0,6,12', "
                             f"got {spec!r}.") from None
        if not -num_entries <= index < num_entries:
            raise ValueError(f"--layers: {index} is out of range; the model has {num_entries} entries "
                             f"(0 = embedding output, 1..{num_entries - 1} = blocks).")
        layers.append(index % num_entries)
    return layers


def run(args: argparse.Namespace) -> Path:
    import torch

    from .. import AudioMosaicModel, average_windows, decode_audio

    output = Path(args.output)
    if output.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"--output must end in .npy or .safetensors, got {output.name}.")
    items = inputs.expand_inputs(args.inputs, args.audio_column)
    model, fe, device = inputs.load_for_inference(AudioMosaicModel, args)
    layers = parse_layers(args.layers, model.config.num_hidden_layers + 1)
    if args.frames:
        return embed_frames(args, model, fe, items, layers, output)
    chunks = []
    with torch.no_grad():
        for chunk in inputs.batched(items, args.batch_size, "Embedding", not args.quiet):
            waveforms = [decode_audio(item, fe.sampling_rate) for item in chunk]
            input_values, clip_index, mask = inputs.featurize(fe, waveforms, args.window_hop, device)
            mask = mask.to(device) if (mask is not None and args.mask_padding) else None
            out = model(input_values, attention_mask=mask, output_hidden_states=layers is not None)
            if layers is None:
                values = out.pooler_output if not args.no_fc_norm else model.pool(out.last_hidden_state, out.token_mask)
            else:
                values = torch.stack([model.pool(out.hidden_states[i], out.token_mask) for i in layers], dim=1)
            chunks.append(average_windows(values.float(), clip_index, len(chunk)).cpu())
    embeddings = torch.cat(chunks)
    meta = {"files": [inputs.item_name(i) for i in items], "model": args.model,
            "layers": "pooled" if layers is None else layers,
            "shape": list(embeddings.shape)}
    write_embeddings(output, {"embeddings": embeddings}, meta)
    print(f"Wrote {tuple(embeddings.shape)} embeddings of {len(items)} clip(s) to {output}", file=sys.stderr)
    return output


def write_embeddings(output: Path, tensors: dict, meta: dict) -> None:
    """A .npy of `tensors["embeddings"]` with `meta` in a .json beside it, or a .safetensors of all `tensors` with
    `meta` (less the per-row timestamps, which are a tensor there) in its metadata; each file appears complete or not
    at all."""
    import numpy as np
    from safetensors.torch import save_file

    from ..caching import atomic_write

    if output.suffix == ".npy":
        with atomic_write(output.with_suffix(".json")) as partial:
            partial.write_text(json.dumps(meta, indent=2))
        with atomic_write(output) as partial, open(partial, "wb") as handle:
            np.save(handle, tensors["embeddings"].numpy())
    else:
        metadata = {key: json.dumps(value) for key, value in meta.items() if key != "timestamps_seconds"}
        with atomic_write(output) as partial:
            save_file({key: value.contiguous() for key, value in tensors.items()}, str(partial), metadata=metadata)


def embed_frames(args: argparse.Namespace, model, fe, items: list, layers: list[int] | None, output: Path) -> Path:
    """`embed --frames`: one vector per 160 ms patch row of every clip (see `embeddings.frame_embeddings`), all clips'
    rows concatenated, with each row's clip and centre time."""
    import torch

    from .. import decode_audio
    from ..embeddings import frame_embeddings

    frames, names = [], []
    for chunk in inputs.batched(items, args.batch_size, "Embedding", not args.quiet):
        waveforms = [decode_audio(item, fe.sampling_rate) for item in chunk]
        chunk_names = [inputs.item_name(item) for item in chunk]
        frames += frame_embeddings(model, fe, waveforms, layers=-1 if layers is None else layers,
                                   window_hop=args.window_hop, batch_size=args.batch_size,
                                   mask_padding=args.mask_padding, names=chunk_names)
        names += chunk_names
    embeddings = torch.cat([f.embeddings for f in frames])
    timestamps = torch.cat([f.timestamps for f in frames])
    clip_index = torch.cat([torch.full((len(f.timestamps),), i) for i, f in enumerate(frames)])
    meta = {"files": names, "model": args.model, "layers": "last" if layers is None else layers,
            "shape": list(embeddings.shape), "frames_per_file": [len(f.timestamps) for f in frames],
            "timestamps_seconds": [[round(t, 4) for t in f.timestamps.tolist()] for f in frames]}
    write_embeddings(output, {"embeddings": embeddings, "timestamps": timestamps, "clip_index": clip_index}, meta)
    print(f"Wrote {tuple(embeddings.shape)} frame embeddings of {len(items)} clip(s) to {output}", file=sys.stderr)
    return output
