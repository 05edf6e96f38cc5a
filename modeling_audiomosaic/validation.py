"""The checks every command and entry point runs on its inputs before it loads or computes anything large: numeric
options in range (named in the message), paths that exist and are of the right kind, outputs that can be written, a
model folder of the kind the command needs, and weight files read so that a corrupt or foreign one is named.

Numeric and path checks are argparse `type=` callables, so the command line reports them as
`argument --batch_size: expected an integer >= 1, got '0'`; `check_arguments` applies the same declarations to a
namespace built in Python (the `interpret` functions take one), and `check_value` one of them to a Python argument, so
every entry point says the same thing. The checks raise `InvalidInput`, both an argparse argument error and a
`ValueError`. `load_pretrained` is `from_pretrained` behind these checks: the folder's kind first, then weights that
are corrupt, pickle code, lack tensors or have other shapes named instead of a traceback or a random initialisation.

    parser.add_argument("--batch_size", type=integer(minimum=1), default=16)
    parser.add_argument("--time_ratio", type=number(above=0, maximum=1), default=0.5)
    parser.add_argument("--model", type=model_reference("encoder"), required=True)
    parser.add_argument("--output_dir", type=output_folder, required=True)
"""

import argparse
import json
import logging
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path


class InvalidInput(ValueError, argparse.ArgumentTypeError):
    """Bad input found by a check here: argparse reports it as an argument error (`type=` callables), the command
    line's error boundary and Python callers see a `ValueError`."""


# ----------------------------------------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------------------------------------


def _bounds(minimum, maximum, above, below) -> str:
    parts = [f">= {minimum}" if minimum is not None else "", f"> {above}" if above is not None else "",
             f"<= {maximum}" if maximum is not None else "", f"< {below}" if below is not None else ""]
    return " and ".join(part for part in parts if part)


def _validator(function: Callable) -> Callable:
    function.is_validator = True  # `check_arguments` re-applies only these declarations
    return function


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[object], int]:
    """An argparse type (and a check for Python values): an integer within [minimum, maximum]."""
    expected = " ".join(filter(None, ["an integer", _bounds(minimum, maximum, None, None)]))

    @_validator
    def parse(value) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise InvalidInput(f"expected {expected}, got {value!r}")
        try:
            result = int(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"expected {expected}, got {value!r}") from None
        if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
            raise InvalidInput(f"expected {expected}, got {value!r}")
        return result

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


def number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None,
           below: float | None = None) -> Callable[[object], float]:
    """An argparse type (and a check for Python values): a finite number within the bounds (`above`/`below` are
    exclusive)."""
    expected = " ".join(filter(None, ["a number", _bounds(minimum, maximum, above, below)]))

    @_validator
    def parse(value) -> float:
        try:
            result = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"expected {expected}, got {value!r}") from None
        if (result != result or result in (float("inf"), float("-inf"))
                or (minimum is not None and result < minimum) or (maximum is not None and result > maximum)
                or (above is not None and result <= above) or (below is not None and result >= below)):
            raise InvalidInput(f"expected {expected}, got {value!r}")
        return result

    parse.__name__ = expected
    return parse


# ----------------------------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------------------------


@_validator
def existing_file(value) -> str:
    """An argparse type: a path to an existing file."""
    path = Path(value)
    if not path.exists():
        raise InvalidInput(f"{value} does not exist")
    if not path.is_file():
        raise InvalidInput(f"{value} is a folder; expected a file")
    return str(value)


def _check_writable_below(path: Path, value) -> None:
    """The nearest existing ancestor of `path` must be a writable folder (so the output can be created)."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidInput(f"cannot create {value}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidInput(f"cannot create {value}: {ancestor} is not writable")


@_validator
def output_folder(value) -> str:
    """An argparse type: a folder to write into (it may exist; it must not be a file, and it must be creatable)."""
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise InvalidInput(f"{value} is an existing file; expected a folder to write into")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InvalidInput(f"{value} is not writable")
    else:
        _check_writable_below(path, value)
    return str(value)


@_validator
def output_file(value) -> str:
    """An argparse type: a file to write (replaced if it exists; it must not be a folder, and it must be creatable)."""
    path = Path(value)
    if path.is_dir():
        raise InvalidInput(f"{value} is an existing folder; expected a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidInput(f"{value} is not writable")
    _check_writable_below(path, value)
    return str(value)


# ----------------------------------------------------------------------------------------------------------------------
# Model folders
# ----------------------------------------------------------------------------------------------------------------------

# `architectures[0]` of an AudioMosaic config -> the kind of folder it is.
_AUDIOMOSAIC_KINDS = {"AudioMosaicModel": "encoder", "AudioMosaicForAudioClassification": "classifier",
                      "AudioMosaicForPreTraining": "pretraining"}
# Kinds that hold an AudioMosaic encoder (what `embed`, HEAR, the SAE and head tools load).
ENCODER_KINDS = ("encoder", "classifier", "pretraining")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def folder_kind(config: dict) -> str:
    """What a folder's `config.json` describes: "encoder", "classifier", "pretraining", "ltu", "sae", or the foreign
    model type (e.g. "llama")."""
    model_type = config.get("model_type")
    if model_type == "audiomosaic":
        architectures = config.get("architectures") or ["AudioMosaicModel"]
        return _AUDIOMOSAIC_KINDS.get(architectures[0], "encoder")
    if model_type == "audiomosaic_ltu":
        return "ltu"
    if "d_sae" in config and "d_in" in config:
        return "sae"
    return str(model_type or "unknown")


def _config_path(value: str) -> Path:
    """The local `config.json` of a folder or Hub id, fetched (or found in the local Hub cache) for a Hub id."""
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise InvalidInput(f"{value} is a file; expected a model folder (with config.json)")
        if not (path / "config.json").is_file():
            raise InvalidInput(f"{value} is not a model folder: it has no config.json")
        return path / "config.json"
    from huggingface_hub import hf_hub_download

    return Path(from_hub(value, lambda: hf_hub_download(value, "config.json")))


def from_hub(value: str, fetch: Callable[[], str], local: str = "local folder") -> str:
    """`fetch()` (a `huggingface_hub` download of Hub id `value`, which is not a local path), or `InvalidInput`
    saying why there is nothing: not a path at all, not in the local cache while offline, or no such repository."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    if not _HUB_ID.match(value):
        raise InvalidInput(f"{value} does not exist")
    try:
        return fetch()
    except LocalEntryNotFoundError:
        reason = "it is not in the local Hub cache and the Hub cannot be reached (offline)"
    except RepositoryNotFoundError:
        reason = "the Hub has no such model"
    except (HfHubHTTPError, OSError, ValueError) as error:
        reason = f"fetching it failed: {str(error).strip().splitlines()[0] if str(error).strip() else error!r}"
    raise InvalidInput(f"{value} does not exist as a {local}, and as a Hub id {reason}")


def _read_config(value: str) -> dict:
    """The `config.json` of model folder or Hub id `value` as a dict; `InvalidInput` when there is none or it is no
    JSON object."""
    path = _config_path(str(value))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"{path} is corrupt or not a JSON file ({error})") from None
    if not isinstance(config, dict):
        raise InvalidInput(f"{path} is corrupt: expected a JSON object")
    return config


def read_model_config(value: str, kinds: tuple[str, ...]) -> dict:
    """The `config.json` of model folder or Hub id `value`, checked to be one of `kinds` (see `folder_kind`);
    `InvalidInput` naming what it is otherwise."""
    config = _read_config(value)
    kind = folder_kind(config)
    if kind not in kinds:
        names = {"ltu": "an LTU model", "sae": "a sparse-autoencoder", "encoder": "an AudioMosaic encoder",
                 "classifier": "an AudioMosaic classifier", "pretraining": "an AudioMosaic pretraining"}
        wanted = " or ".join(names.get(k, f"a {k}") for k in kinds)
        raise InvalidInput(f"{value} is {names.get(kind, f'a {kind}')} folder; expected {wanted} folder")
    return config


def model_reference(*kinds: str) -> Callable[[object], str]:
    """An argparse type: a model folder or Hub id of one of `kinds` (default: any folder holding an AudioMosaic
    encoder). Only its config is read."""
    kinds = kinds or ENCODER_KINDS

    @_validator
    def parse(value) -> str:
        read_model_config(str(value), kinds)
        return str(value)

    parse.__name__ = " or ".join(kinds) + " model folder"
    return parse


# ----------------------------------------------------------------------------------------------------------------------
# Weight files
# ----------------------------------------------------------------------------------------------------------------------


def corrupt_file(path: str | Path, what: str, error: BaseException | str) -> ValueError:
    """The error for an unreadable artefact: "PATH is corrupt or not a WHAT file (reason)"; the reason is `error`'s
    first line, and for an exception (a library's message, often paragraphs of advice) its first sentence."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, BaseException):
        reason = reason.split(". ")[0].rstrip(".")
    article = "an" if what[:1].lower() in "aeiou" else "a"
    return ValueError(f"{path} is corrupt or not {article} {what} file ({reason})")


def code_pickle(path: str | Path, error: BaseException | str) -> ValueError:
    """The error for a torch pickle that needs code to be read (refused by `weights_only=True`, never run); `error` is
    torch's refusal, or the globals it would need."""
    # torch's message spans many lines; the sentence naming the offending global is the useful one.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "global" in line.lower()), lines[0] if lines else "").split(". ")[0]
    return ValueError(f"{path} needs code to be unpickled, which is refused (torch.load with weights_only=True); "
                      f"re-save it as a plain dict of tensors ({detail})")


def read_safetensors(path: str | Path, what: str = "safetensors weights") -> dict:
    """All tensors of a safetensors file; a truncated or foreign file raises `corrupt_file`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise corrupt_file(path, what, error) from None


def read_torch_weights(path: str | Path, what: str = "PyTorch weights") -> dict:
    """A flat dict of tensors from a torch pickle, read with `weights_only=True` (pickles that need code are refused,
    never run); anything else raises `corrupt_file`."""
    import torch

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise code_pickle(path, error) from None
    except (EOFError, OSError, RuntimeError, ValueError, IndexError, KeyError, TypeError, AttributeError,
            UnicodeDecodeError) as error:  # the weights-only unpickler fails in these ways on bytes that are no pickle
        raise corrupt_file(path, what, error if str(error).strip() else repr(error)) from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise corrupt_file(path, what, "it does not hold a flat dict of tensors")
    return state_dict


def _weights_file(reference: str) -> str:
    """The weights file of a local model folder (for messages), else the reference itself."""
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return next((str(Path(reference) / name) for name in names if (Path(reference) / name).is_file()), reference)


def _drop_warnings(record: logging.LogRecord) -> bool:
    return record.levelno != logging.WARNING


def load_pretrained(model_class, reference, kinds: tuple[str, ...] = ENCODER_KINDS, **from_pretrained_kwargs):
    """`model_class.from_pretrained(reference, ...)` once `reference` is known to be a model folder or Hub id of one of
    `kinds` (its config only is read first, so a missing path or a foreign model is named before anything is built).
    Weights that are truncated, foreign, of other shapes or that pickle code are named (`corrupt_file`,
    `code_pickle`) instead of surfacing as the loader's traceback, and weights the model lacks (which transformers
    would initialise at random) are an error. The head or projector of a classifier or pretraining folder loaded as
    its encoder is dropped quietly: that is what loading the encoder means."""
    from safetensors import SafetensorError

    reference = str(reference)
    read_model_config(reference, kinds)
    # transformers reports missing and unexpected keys as a multi-line warning; they are checked here instead. (A
    # filter, not a level: transformers' loader reads its logger's level to decide on other warnings.)
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addFilter(_drop_warnings)
    # Mismatched shapes come back in the loading info (named below) rather than as an error about the report.
    allow_mismatch = from_pretrained_kwargs.pop("ignore_mismatched_sizes", False)
    try:
        model, info = model_class.from_pretrained(reference, output_loading_info=True, ignore_mismatched_sizes=True,
                                                  **from_pretrained_kwargs)
    except pickle.UnpicklingError as error:
        raise code_pickle(_weights_file(reference), error) from None
    except (SafetensorError, RuntimeError, EOFError) as error:
        # A state-dict mismatch lists every key; its first "size mismatch" line says what is wrong.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "mismatch" in line), lines[0] if lines else type(error).__name__)
        raise corrupt_file(_weights_file(reference), f"{_kind_name(model_class)} weights", reason) from None
    finally:
        report_logger.removeFilter(_drop_warnings)
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched and not allow_mismatch:
        key, *shapes = mismatched[0]
        shapes = " in the file vs ".join(str(tuple(shape)) for shape in shapes[:2])
        raise corrupt_file(_weights_file(reference), f"{_kind_name(model_class)} weights",
                           f"{len(mismatched)} weight(s) do not fit its config.json, e.g. {key}: {shapes} in the model")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        listed = ", ".join(missing[:4]) + (f", ... ({len(missing) - 4} more)" if len(missing) > 4 else "")
        raise corrupt_file(_weights_file(reference), f"{_kind_name(model_class)} weights",
                           f"it lacks {len(missing)} weight(s) the model needs: {listed}")
    return model


def _kind_name(model_class) -> str:
    """"AudioMosaic encoder" for AudioMosaicModel, ... (the class name for other models)."""
    kind = _AUDIOMOSAIC_KINDS.get(model_class.__name__)
    return f"AudioMosaic {kind}" if kind else model_class.__name__


# ----------------------------------------------------------------------------------------------------------------------
# Values and namespaces built in Python
# ----------------------------------------------------------------------------------------------------------------------


def is_a(value, class_name: str) -> bool:
    """Whether `value` is an instance of a class named `class_name` (or of a subclass): by name, so that the classes
    transformers loads as Hub remote code (`trust_remote_code=True`), which are copies of ours, count too."""
    return any(cls.__name__ == class_name for cls in type(value).__mro__)


def check_value(name: str, value, validate: Callable, optional: bool = False):
    """`validate(value)` (an `integer(...)`, `number(...)`, path check, ...) for a value that did not come through a
    parser: the converted value, or `InvalidInput` naming it as the user wrote it, "argument --epochs: expected ..."
    for an option (`name` "--epochs": dataclass fields, namespaces) and "`epochs`: expected ..." for a Python argument.
    With `optional`, None (an unset optional value) passes unchecked."""
    if optional and value is None:
        return None
    try:
        return validate(value)
    except argparse.ArgumentTypeError as error:
        label = f"argument {name}" if name.startswith("--") else f"`{name}`"
        raise InvalidInput(f"{label}: {error}") from None


def check_arguments(args: argparse.Namespace, add_arguments: Callable[[argparse.ArgumentParser], None]
                    ) -> argparse.Namespace:
    """What the parser would do to a namespace built in Python, with the options `add_arguments` declares: fill in
    the defaults it leaves out, refuse missing required options and values outside `choices`, and apply the
    declared validators (`type=integer(...)`, `output_folder`, ...), converting values; `ValueError` naming the
    option."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    actions = [action for action in parser._actions if action.dest != argparse.SUPPRESS]
    missing = [_option_name(action) for action in actions
               if action.required and getattr(args, action.dest, None) is None]
    if missing:
        raise ValueError(f"the following arguments are required: {', '.join(missing)}")
    for action in actions:
        if not hasattr(args, action.dest):
            setattr(args, action.dest, action.default)
        value = getattr(args, action.dest)
        if value is None:
            continue
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"argument {_option_name(action)}: invalid choice: {value!r} (choose from "
                             f"{', '.join(map(str, action.choices))})")
        validate = action.type
        if getattr(validate, "is_validator", False):
            try:
                converted = [validate(v) for v in value] if isinstance(value, list) else validate(value)
            except argparse.ArgumentTypeError as error:
                raise ValueError(f"argument {_option_name(action)}: {error}") from None
            setattr(args, action.dest, converted)
    return args


def _option_name(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


# ----------------------------------------------------------------------------------------------------------------------
# Lists, language models, weight files of a folder, dataclass fields (appended for issue 20's tools: the LTU, SAE,
# few-shot, heads and effective-rank commands)
# ----------------------------------------------------------------------------------------------------------------------


def integer_list(minimum: int | None = None, maximum: int | None = None) -> Callable[[object], tuple[int, ...]]:
    """An argparse type: comma-separated integers within [minimum, maximum] ("1,5,20" -> (1, 5, 20)); a tuple of
    Python integers is checked the same way (a tuple, so that `check_arguments` checks it as one value)."""
    item = integer(minimum, maximum)
    expected = f"comma-separated integers {_bounds(minimum, maximum, None, None)}".strip()

    @_validator
    def parse(value) -> tuple[int, ...]:
        parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
        try:
            numbers = tuple(item(part.strip() if isinstance(part, str) else part) for part in parts)
        except argparse.ArgumentTypeError:
            numbers = ()
        if not numbers:
            raise InvalidInput(f"expected {expected}, got {value!r}")
        return numbers

    parse.__name__ = expected
    return parse


def choice_list(choices: tuple[str, ...]) -> Callable[[object], tuple[str, ...]]:
    """An argparse type: a non-empty comma-separated selection from `choices` ("none,time" -> ("none", "time"))."""

    @_validator
    def parse(value) -> tuple[str, ...]:
        parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
        names = tuple(str(part).strip() for part in parts if str(part).strip())
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            raise InvalidInput(f"expected comma-separated names from {', '.join(choices)}, "
                                             f"got {value!r}")
        return names

    parse.__name__ = f"comma-separated names from {', '.join(choices)}"
    return parse


# Kinds a language model folder must not be: the audio models and their tools.
_AUDIO_KINDS = (*ENCODER_KINDS, "ltu", "sae", "unknown")


@_validator
def language_model_reference(value) -> str:
    """An argparse type: the folder (or Hub id) of a causal language model, i.e. a transformers config of a
    foreign model type (e.g. "llama"), not an AudioMosaic, LTU or SAE folder. Only its config is read, and the
    headers of a local folder's weight files (`check_weight_files`)."""
    kind = folder_kind(_read_config(value))
    if kind in _AUDIO_KINDS:
        what = "has no model_type in its config.json" if kind == "unknown" else f"is an audio model folder ({kind})"
        raise InvalidInput(f"{value} {what}; expected a causal language model folder (e.g. LLaMA)")
    if Path(value).is_dir():
        try:
            check_weight_files(value)
        except ValueError as error:
            raise InvalidInput(str(error)) from None
    return str(value)


def check_weight_files(folder: str | Path) -> None:
    """Read the headers of every weight file of a local model folder (safetensors headers; the pickle programs of
    torch `.bin` files, without their tensors), so a truncated, foreign or code-carrying file is named before a
    large model is built from it: `ValueError` "FILE is corrupt ..." or "FILE needs code to be unpickled ...". Cheap:
    no tensor is read."""
    from safetensors import SafetensorError, safe_open
    from torch.serialization import get_unsafe_globals_in_checkpoint

    folder = Path(folder)
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise corrupt_file(path, "safetensors weights", error) from None
    for path in sorted(folder.glob("*.bin")):
        if not path.name.startswith("pytorch_model"):
            continue
        try:
            unsafe = get_unsafe_globals_in_checkpoint(str(path))
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            raise corrupt_file(path, "PyTorch weights", error) from None
        if unsafe:
            raise code_pickle(path, f"needs {', '.join(unsafe[:3])}")


def check_fields(instance, validators: dict[str, Callable]) -> None:
    """`check_value` for each named field of a dataclass instance (its `__post_init__`, fields named as options),
    storing converted values; unset (None) fields pass."""
    for name, validate in validators.items():
        setattr(instance, name, check_value(f"--{name}", getattr(instance, name), validate, optional=True))
