"""Export an AudioMosaic folder to OUT_DIR/model.onnx with dynamic batch size and number of frames (16 to the model's
max_length), checked against PyTorch at several lengths; the feature extractor config and config.json are written
beside it. Needs onnx, onnxscript and onnxruntime (the `onnx` extra).

    audiomosaic export-onnx runs/finetune onnx/ --int8
"""

import argparse
import sys

from ..inputs import command_parser, loading_bars
from ..onnx_export import MINIMUM_OPSET
from ..validation import ENCODER_KINDS, integer, model_reference, output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=model_reference(*ENCODER_KINDS),
                        help="AudioMosaic folder or Hub id (encoder, pretraining or classifier)")
    parser.add_argument("out_dir", type=output_folder, help="output folder")
    parser.add_argument("--task", choices=("auto", "classifier", "encoder"), default="auto",
                        help="what to export (auto: the classifier when the folder holds one)")
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx (dynamic int8 quantisation)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--opset", type=integer(minimum=MINIMUM_OPSET), default=MINIMUM_OPSET,
                        help=f"ONNX opset, {MINIMUM_OPSET} (the default: torch's exporter writes no older one) up to "
                             "the newest the installed onnx knows")


def run(args: argparse.Namespace) -> dict:
    import onnxruntime  # noqa: F401  (the dispatcher names the `onnx` extra when it is missing)

    from ..onnx_export import export_onnx

    with loading_bars(not args.quiet):
        result = export_onnx(args.model_dir, args.out_dir, task=args.task, opset=args.opset, int8=args.int8)
    for length, error in result["max_abs_error"].items():
        print(f"onnxruntime vs PyTorch at {length} frames: max |error| {error:.2e}", file=sys.stderr)
    print(f"Wrote the {result['task']} to {', '.join(result['files'])}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("export-onnx", __doc__, add_arguments).parse_args(argv))
