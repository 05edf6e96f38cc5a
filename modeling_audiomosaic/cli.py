"""`audiomosaic` command line: embeddings, classification and timelines, ONNX export, conversion, training, probing,
analysis, interpretability and publishing. `audiomosaic COMMAND --help` lists a command's options.

    audiomosaic embed clips/ --model runs/pretrain --output embeddings.npy
    audiomosaic classify a.wav b.flac --model runs/finetune --top_k 3
    audiomosaic pretrain --recipe pretrain_tiny_cpu --dataset clips/ --output_dir runs/pretrain
    audiomosaic finetune --recipe finetune_generic --dataset meta.csv --output_dir runs/finetune

Commands marked [train], [interpret], [onnx] or [ltu] need that extra: pip install "modeling-audiomosaic[train]".
"""

import argparse
import importlib
import os
import sys


# name -> (module with `main(argv)`, extra it needs or None, one-line help). Modules are imported only when their
# command runs, so `embed` never imports the training package (tests/test_install_boundary.py).
COMMANDS = {
    "embed": ("modeling_audiomosaic.commands.embed", None,
              "pooled, per-layer or per-frame embeddings of audio files -> .npy / .safetensors"),
    "classify": ("modeling_audiomosaic.commands.classify", None, "top-k labels (or a timeline) of audio files"),
    "norm-stats": ("modeling_audiomosaic.commands.norm_stats", None,
                   "log-Mel mean and std of your audio (normalisation statistics)"),
    "export-onnx": ("modeling_audiomosaic.commands.export_onnx", "onnx",
                    "export an encoder or classifier to ONNX (dynamic batch and length)"),
    "convert-official": ("modeling_audiomosaic.convert_official", None,
                         "convert an authors' checkpoint to a transformers folder"),
    "convert-ltu": ("modeling_audiomosaic.convert_ltu", "ltu",
                    "convert the authors' LTU audio-LLM release (+ base LLaMA) to a transformers folder"),
    "pretrain": ("audiomosaic_training.pretrain", "train", "contrastive pretraining (training/pretrain.py)"),
    "finetune": ("audiomosaic_training.finetune", "train", "fine-tuning with transformers' Trainer"),
    "probe": ("audiomosaic_training.probe", "train", "linear / layer / weighted-sum / attentive probes"),
    "effective-rank": ("audiomosaic_training.effective_rank", "train",
                       "effective rank of pooled representations under masking (+ PNG)"),
    "publish": ("audiomosaic_training.publish", "train", "write a run's model card and upload it"),
    "train-ltu": ("audiomosaic_training.ltu", "train",
                  "audio-language model (LTU), one curriculum stage per run"),
    "sae-train": ("modeling_audiomosaic.commands.sae_train", "interpret",
                  "train a sparse autoencoder on a layer's pooled or patch-token activations"),
    "sae-report": ("modeling_audiomosaic.commands.sae_report", "interpret",
                   "SAE metrics, probes on codes vs raw, per-class latents and PNGs"),
    "fewshot": ("modeling_audiomosaic.commands.fewshot", "interpret",
                "few-shot benchmark of CALM, SAV and baselines over head vectors (+ PNG)"),
    "heads": ("modeling_audiomosaic.commands.heads", "interpret",
              "per-head probe map, head ablation / emphasis / steering vs random heads (+ PNGs)"),
}
# Bad input surfaces as these exceptions (transformers raises OSError for a folder without weights or config; a
# missing optional dependency is an ImportError); the command line answers them with one line instead of a traceback.
USER_ERRORS = (ValueError, OSError, ImportError)  # OSError covers FileNotFoundError
DEBUG_VARIABLE = "AUDIOMOSAIC_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: `--debug` and the list of commands (each command parses its own arguments)."""
    listing = "\n".join(f"  {name:<17} {text}" + (f" [{extra}]" if extra else "")
                        for name, (_, extra, text) in COMMANDS.items())
    parser = argparse.ArgumentParser(prog="audiomosaic", description=__doc__, epilog=f"commands:\n{listing}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="before the command: show the Python traceback of an error instead of one line "
                             f"(or set {DEBUG_VARIABLE}=1)")
    parser.add_argument("command", metavar="COMMAND", choices=COMMANDS, help="one of the commands below")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the command's arguments")
    return parser


def describe(error: Exception, extra: str | None) -> str:
    """The one line shown for `error`; a missing module is traced back to the extra that installs it."""
    if isinstance(error, ImportError) and extra and error.name:
        return (f"needs the {extra} extra: pip install 'modeling-audiomosaic[{extra}]' "
                f"(missing module: {error.name}).")
    return str(error)


def run(argv: list[str] | None = None):
    """Run one command and return its result (embeddings path, predictions, results dict, ...).

    This is the command line's one error boundary: bad input, in any command, ends with one line `audiomosaic COMMAND:
    error: ...` on stderr and exit status 1. `audiomosaic --debug COMMAND ...` or AUDIOMOSAIC_DEBUG=1 re-raises the
    exception with its traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    debug = os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv:
            parser.print_help()
            raise SystemExit(2)
        parser.parse_args(argv)  # --help, or an error naming the unknown command
    command, arguments = argv[0], argv[1:]
    module_name, extra, _ = COMMANDS[command]
    try:
        return importlib.import_module(module_name).main(arguments)
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"audiomosaic {command}: error: {describe(error, extra)}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: exit status 0 on success, 1 on bad input (one line, see `run`)."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
