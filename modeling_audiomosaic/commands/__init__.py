"""The `audiomosaic` commands of the core package, one module per command (`modeling_audiomosaic.cli` lists them
with the converters and the training scripts, which follow the same protocol).

Every command module has `main(argv) -> result`; the argparse-based ones (all but the dataclass-argument training
scripts) also have `add_arguments(parser)` and `run(args) -> result`, so that a caller can build, check and run the
parsed arguments in separate steps. A module's docstring is its `--help` description. Bad input raises ValueError /
OSError, which the dispatcher (`modeling_audiomosaic.cli`, the command line's one error boundary) prints as one line.
"""
