"""The `audiomosaic sae-train | sae-report | fewshot | heads` commands: labelled audio in (a folder with one
sub-folder per class, or a CSV with audio and label columns), JSON / Markdown tables / PNGs out. Activations are
collected once per (model, files, options) and cached under `--cache_dir` (default: `<output_dir>/cache`)."""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..caching import atomic_folder
from ..inputs import (
    TABLE_EXTENSIONS,
    add_input_arguments,
    check_columns,
    find_audio_files,
    read_table,
    resolve_audio_path,
)
from ..validation import (
    ENCODER_KINDS,
    check_arguments,
    check_value,
    check_weight_files,
    corrupt_file,
    integer,
    integer_list,
    model_reference,
    number,
    output_folder,
)


# ----------------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------------


def read_labelled_audio(source: str, audio_column: str = "audio", label_column: str = "label",
                        fold_column: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(files, labels, folds or None) from a folder (label = name of each file's parent folder) or a CSV / JSON /
    Parquet list (relative paths resolved against the list's folder). Every file must exist and there must be at
    least two classes."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"Data {source} does not exist.")
    if path.is_dir():
        files = find_audio_files(path)
        if fold_column is not None:
            raise ValueError("--fold_column needs a CSV input; a folder gives labels only.")
        files, labels, folds = [str(p) for p in files], np.array([p.parent.name for p in files]), None
    elif path.suffix.lower() not in TABLE_EXTENSIONS:
        raise ValueError(f"Data must be a folder of class sub-folders or a CSV/JSON/Parquet list, got {source}.")
    else:
        rows = read_table(path)
        for column, option in ((audio_column, "--audio_column"), (label_column, "--label_column"),
                               (fold_column, "--fold_column")):
            check_columns(rows, [column], source, option)
        files = [resolve_audio_path(row[audio_column], path) for row in rows]
        missing = next((i for i, name in enumerate(files) if not Path(name).is_file()), None)
        if missing is not None:
            raise FileNotFoundError(f"{source}: row {missing} names {files[missing]}, which does not exist "
                                    "(--audio_column).")
        folds = np.array([str(row[fold_column]) for row in rows]) if fold_column else None
        labels = np.array([str(row[label_column]) for row in rows])
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        where = "one sub-folder per class" if path.is_dir() else "a --label_column with two or more values"
        raise ValueError(f"{source} holds one class ({classes[0]!r}); these tools compare classes and need at least "
                         f"two ({where}).")
    return files, labels, folds


def split_train_test(labels: np.ndarray, folds: np.ndarray | None, test_folds: str | None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the test folds (comma-separated) vs the rest, or a stratified 25 % random test split (which needs
    two clips per class and as many test and training clips as classes)."""
    if test_folds:
        if folds is None:
            raise ValueError("--test_folds needs --fold_column.")
        wanted = {f.strip() for f in test_folds.split(",")}
        present = sorted(map(str, set(folds)))
        unknown = wanted - set(present)
        if unknown:
            raise ValueError(f"--test_folds {sorted(unknown)} not found; folds are {present}.")
        test = np.isin(folds, list(wanted))
        training_classes = sorted(map(str, set(labels[~test])))
        if len(training_classes) < 2:
            raise ValueError(f"--test_folds {test_folds} leaves training clips of {len(training_classes)} class(es) "
                             f"{training_classes}; at least two are needed (folds are {present}).")
        return np.flatnonzero(~test), np.flatnonzero(test)
    from sklearn.model_selection import train_test_split

    names, counts = np.unique(labels, return_counts=True)
    num_test = math.ceil(0.25 * len(labels))
    if counts.min() < 2 or min(num_test, len(labels) - num_test) < len(names):
        needed = max(4 * len(names) - 3, 2 * len(names))  # as many test clips (a quarter, rounded up) as classes
        raise ValueError(f"A stratified 25 % test split of {len(labels)} clips in {len(names)} classes needs two clips "
                         f"per class and {needed} clips in all (class {str(names[counts.argmin()])!r} has "
                         f"{counts.min()}); add clips, or give --fold_column and --test_folds.")
    return tuple(np.sort(part) for part in train_test_split(np.arange(len(labels)), test_size=0.25,
                                                          stratify=labels, random_state=seed))


def labelled_data(args: argparse.Namespace) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(files, labels, train rows, test rows) of --data: read and split before any model is loaded."""
    files, labels, folds = read_labelled_audio(args.data, args.audio_column, args.label_column, args.fold_column)
    train, test = split_train_test(labels, folds, args.test_folds, args.seed)
    return files, labels, train, test


def encoder_config(args: argparse.Namespace):
    """The `AudioMosaicConfig` of --model (config only), to check options against its depth, width and length
    before the weights are loaded or anything is computed."""
    from ..configuration_audiomosaic import AudioMosaicConfig

    config = AudioMosaicConfig.from_pretrained(args.model)
    if args.max_length is not None and args.max_length > config.max_length:
        raise ValueError(f"--max_length {args.max_length} is longer than the model's max_length {config.max_length}.")
    return config


def load_encoder(args: argparse.Namespace):
    """(AudioMosaicModel, feature extractor) from --model (its weight files checked first, so a corrupt one is
    named); --random_init keeps the config and draws new weights."""
    from ..inputs import load_feature_extractor
    from ..modeling_audiomosaic import AudioMosaicModel

    if Path(args.model).is_dir():
        check_weight_files(args.model)
    model = AudioMosaicModel.from_pretrained(args.model)
    if args.random_init:
        torch.manual_seed(args.seed)
        model = AudioMosaicModel(model.config)
    return model.eval(), load_feature_extractor(args.model, args.max_length, model.config.max_length)


def encoder_activations(args: argparse.Namespace, files: list[str], token_layer: int | None = None):
    """(encoder, feature extractor, activations) of `files`, read from or written to the activation cache."""
    from .activations import load_or_collect_activations

    model, feature_extractor = load_encoder(args)
    start = time.time()
    activations, path, cached = load_or_collect_activations(
        model, feature_extractor, files, args.cache_dir or Path(args.output_dir) / "cache", pooling=args.pooling,
        token_layer=token_layer, batch_size=args.batch_size, progress=not args.quiet)
    print(f"activations of {len(files)} clips {'read from' if cached else 'written to'} {path} "
          f"({time.time() - start:.1f} s)", file=sys.stderr)
    return model, feature_extractor, activations


def check_command_arguments(args: argparse.Namespace, add_arguments) -> argparse.Namespace:
    """The checks of the command's parser (`add_arguments`) on a namespace that may have been built in Python
    (options it leaves out take their defaults), and --model as a folder or Hub id holding an AudioMosaic encoder."""
    check_arguments(args, add_arguments)
    args.model = check_value("--model", args.model, model_reference(*ENCODER_KINDS))
    return args


def featurize_files(feature_extractor, files: list[str]) -> torch.Tensor:
    from ..feature_extraction_audiomosaic import load_audio

    waveforms = [load_audio(f, feature_extractor.sampling_rate) for f in files]
    return feature_extractor(waveforms, sampling_rate=feature_extractor.sampling_rate,
                             return_tensors="pt")["input_values"]


def write_json(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload, indent=2))
    return path


def linear_probe_scores(train_x, train_y, test_x, test_y, C: float = 1.0) -> dict:
    """Accuracy and macro-F1 of a standardised multinomial logistic regression (C fixed, lbfgs)."""
    from sklearn.metrics import accuracy_score, f1_score

    from .fewshot import pooled_logistic_regression

    predicted = pooled_logistic_regression(C).fit(train_x, train_y).predict(test_x)
    return {"accuracy": float(accuracy_score(test_y, predicted)),
            "macro_f1": float(f1_score(test_y, predicted, average="macro"))}


def _layer_index(layer: int, num_states: int, option: str = "--layer") -> int:
    if not -num_states <= layer < num_states:
        raise ValueError(f"{option} {layer} is out of range; the model has hidden states 0..{num_states - 1} "
                         "(0 = embedding output, negative counts from the end).")
    return layer % num_states


def _smallest_class(labels: np.ndarray) -> tuple[str, int]:
    names, counts = np.unique(labels, return_counts=True)
    return str(names[counts.argmin()]), int(counts.min())


# ----------------------------------------------------------------------------------------------------------------------
# sae-train / sae-report
# ----------------------------------------------------------------------------------------------------------------------


def sae_inputs(activations, layer: int, mode: str, rows: np.ndarray, tokens_per_clip: int | None = None,
               seed: int = 0) -> np.ndarray:
    """The SAE's input vectors for clip rows: pooled hidden state (clip mode) or patch tokens (token mode,
    optionally `tokens_per_clip` random tokens per clip)."""
    if mode == "clip":
        return activations.hidden[rows, layer].numpy()
    tokens = activations.tokens[rows]
    if tokens_per_clip is not None and tokens_per_clip < tokens.shape[1]:
        rng = np.random.default_rng(seed)
        picks = np.stack([rng.choice(tokens.shape[1], tokens_per_clip, replace=False) for _ in range(len(rows))])
        tokens = torch.gather(tokens, 1, torch.as_tensor(picks)[..., None].expand(-1, -1, tokens.shape[-1]))
    return tokens.reshape(-1, tokens.shape[-1]).numpy()


def sae_train(args: argparse.Namespace) -> dict:
    """`audiomosaic sae-train`: every option is checked against the data and the model's config before activations
    are collected; OUTPUT_DIR/sae/ is written only once the autoencoder is trained and evaluated."""
    from .sae import evaluate_sae, train_sae

    check_command_arguments(args, add_sae_train_arguments)
    files, labels, train, test = labelled_data(args)
    config = encoder_config(args)
    layer = _layer_index(args.layer, config.num_hidden_layers + 1)
    d_sae = int(args.expansion * config.hidden_size)
    if d_sae < 1:
        raise ValueError(f"--expansion {args.expansion} gives {d_sae} latents for the model's width "
                         f"{config.hidden_size}; expected at least 1.")
    if args.activation == "topk" and args.k > d_sae:
        raise ValueError(f"--k {args.k} is more than the {d_sae} latents (--expansion {args.expansion} x width "
                         f"{config.hidden_size}); expected --k at most {d_sae}.")
    model, fe, activations = encoder_activations(args, files, token_layer=layer if args.mode == "token" else None)
    train_x = sae_inputs(activations, layer, args.mode, train, args.tokens_per_clip, args.seed)
    test_x = sae_inputs(activations, layer, args.mode, test, args.tokens_per_clip, args.seed)
    start = time.time()
    sae, history = train_sae(train_x, d_sae=d_sae, activation=args.activation,
                             k=args.k, l1_coefficient=args.l1_coefficient, epochs=args.epochs,
                             batch_size=args.sae_batch_size, learning_rate=args.learning_rate, seed=args.seed,
                             progress=not args.quiet)
    seconds = time.time() - start
    info = {"model": args.model, "data": args.data, "layer": layer, "mode": args.mode, "pooling": args.pooling,
            "random_init": args.random_init, "train_vectors": int(len(train_x)), "train_seconds": seconds,
            "history": history, "held_out": evaluate_sae(sae, test_x)}
    with atomic_folder(Path(args.output_dir) / "sae") as output:
        sae.save_pretrained(output)
        write_json(output / "audiomosaic_sae.json", info)
    print(json.dumps({k: info[k] for k in ("layer", "mode", "train_vectors", "train_seconds", "held_out")}, indent=2))
    return info


class splice_layer:
    """Context manager: rewrite `hidden_states[layer]` (0 = embedding output) inside the encoder's forward pass
    with `transform(hidden) -> hidden` (batch, tokens, width)."""

    def __init__(self, model, layer: int, transform):
        self.module = model.embeddings if layer == 0 else model.layers[layer - 1]
        self.transform = transform

    def __enter__(self):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (self.transform(output[0]), *output[1:])
            return self.transform(output)

        self.handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def downstream_fidelity(sae, model, input_values: torch.Tensor, labels: np.ndarray, readout, layer: int, mode: str,
                        mean_vector: torch.Tensor) -> dict:
    """Frozen-readout accuracy with the layer's activations replaced by the SAE reconstruction (token mode: each
    patch token; clip mode: all tokens shifted so their mean equals the reconstruction of their mean) and by the
    training mean; fidelity = (spliced - mean-ablated) / (clean - mean-ablated)."""
    from .activations import pool_tokens
    from .heads import pooled_outputs

    def replace(values_for):
        def transform(hidden):
            if mode == "token":
                patches = values_for(hidden[:, 1:])
                return torch.cat([hidden[:, :1], patches.to(hidden)], dim=1)
            pooled = pool_tokens(hidden, "mean")
            return hidden + (values_for(pooled).to(hidden) - pooled)[:, None]
        return transform

    def accuracy(transform=None):
        if transform is None:
            features = pooled_outputs(model, input_values)
        else:
            with splice_layer(model, layer, transform):
                features = pooled_outputs(model, input_values)
        return float((readout.predict(features) == labels).mean())

    with torch.no_grad():
        clean = accuracy()
        spliced = accuracy(replace(lambda x: sae.decode(sae.encode(x))))
        ablated = accuracy(replace(lambda x: mean_vector.expand_as(x)))
    denominator = clean - ablated
    return {"clean_accuracy": clean, "spliced_accuracy": spliced, "mean_ablated_accuracy": ablated,
            "fidelity": (spliced - ablated) / denominator if abs(denominator) > 1e-9 else None}


def sae_report(args: argparse.Namespace) -> dict:
    """`audiomosaic sae-report`: the SAE is read and checked against --model's width and depth before activations
    are collected; the report's files are written together at the end."""
    from .sae import SparseAutoencoder

    check_command_arguments(args, add_sae_report_arguments)
    args.sae = check_value("--sae", args.sae, model_reference("sae"))
    sae = SparseAutoencoder.from_pretrained(args.sae).eval()  # names a corrupt or foreign model.safetensors
    info_path = Path(args.sae) / "audiomosaic_sae.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{args.sae} is not an `audiomosaic sae-train` output (no audiomosaic_sae.json).")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        layer, mode = int(info["layer"]), str(info["mode"])
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
        raise corrupt_file(info_path, "sae-train description (layer, mode)", repr(error)) from None
    files, labels, train, test = labelled_data(args)
    config = encoder_config(args)
    if sae.d_in != config.hidden_size or not 0 <= layer <= config.num_hidden_layers:
        raise ValueError(f"{args.sae} was trained on hidden state {layer} of width {sae.d_in}; --model {args.model} "
                         f"has hidden states 0..{config.num_hidden_layers} of width {config.hidden_size}.")
    model, fe, activations = encoder_activations(args, files, token_layer=layer if mode == "token" else None)
    with atomic_folder(args.output_dir) as output:
        return _write_sae_report(args, sae, layer, mode, files, labels, train, test, model, fe, activations, output)


def _write_sae_report(args, sae, layer, mode, files, labels, train, test, model, fe, activations,
                      output: Path) -> dict:
    """The report's computations, writing its PNGs and JSON into `output` (a staging folder)."""
    from .plots import plot_heatmap, plot_latent_on_spectrograms
    from .sae import encode_batched, evaluate_sae, latent_class_report

    start = time.time()
    report = {"sae": args.sae, "layer": layer, "mode": mode, "data": args.data,
              "held_out": evaluate_sae(sae, sae_inputs(activations, layer, mode, test))}

    # Clip-level codes: the code of the pooled vector, or the mean of the token codes over the clip.
    if mode == "clip":
        codes = encode_batched(sae, activations.hidden[:, layer]).numpy()
    else:
        tokens = activations.tokens
        codes = encode_batched(sae, tokens.reshape(-1, tokens.shape[-1])).reshape(len(tokens), tokens.shape[1], -1)
        token_codes, codes = codes, codes.mean(dim=1).numpy()
    raw = activations.hidden[:, layer].numpy()
    report["probe_raw"] = linear_probe_scores(raw[train], labels[train], raw[test], labels[test])
    report["probe_codes"] = linear_probe_scores(codes[train], labels[train], codes[test], labels[test])

    class_report = latent_class_report(codes, labels, top_latents=args.top_latents)
    report["latents_per_class"] = class_report
    classes = sorted(set(labels))
    latents = list(dict.fromkeys(r["latent"] for r in class_report))
    rates = np.array([[(codes[labels == c][:, latent] > 0).mean() for latent in latents] for c in classes])
    plot_heatmap(rates, output / "sae_class_latent_heatmap.png",
                 f"in-class firing rate of each class's top latents (layer {layer}, {mode} SAE)", "latent", "class",
                 latents, classes)

    # Downstream fidelity on the test clips with a readout fitted on the clean training outputs.
    pooled = model.fc_norm(activations.hidden[:, -1]).detach().numpy()
    from .fewshot import pooled_logistic_regression

    readout = pooled_logistic_regression().fit(pooled[train], labels[train])
    test_inputs = featurize_files(fe, [files[i] for i in test])
    mean_vector = torch.as_tensor(sae_inputs(activations, layer, mode, train).mean(axis=0))
    report["downstream"] = downstream_fidelity(sae, model, test_inputs, labels[test], readout, layer, mode,
                                               mean_vector)
    if mode == "token":
        best = max(class_report, key=lambda r: r["auroc"])
        clips = best["top_clips"][: args.top_clips]
        grid = activations.grid
        maps = [token_codes[i, :, best["latent"]].reshape(grid).numpy() for i in clips]
        spectrograms = [s.numpy() for s in featurize_files(fe, [files[i] for i in clips])]
        report["latent_figure"] = {"latent": best["latent"], "class": best["class"], "clips": [files[i] for i in clips]}
        plot_latent_on_spectrograms(spectrograms, maps, [f"{labels[i]}: {Path(files[i]).name}" for i in clips],
                                    output / "sae_latent_spectrograms.png",
                                    f"latent {best['latent']} (top latent of '{best['class']}', AUROC "
                                    f"{best['auroc']:.2f}) over its top clips")
    report["report_seconds"] = time.time() - start
    write_json(output / "sae_report.json", report)
    summary = {k: report[k] for k in ("held_out", "probe_raw", "probe_codes", "downstream")}
    print(json.dumps(summary, indent=2))
    return report


# ----------------------------------------------------------------------------------------------------------------------
# fewshot
# ----------------------------------------------------------------------------------------------------------------------


def best_layer_by_nearest_centroid(hidden: np.ndarray, labels: np.ndarray, train: np.ndarray, seed: int = 0) -> int:
    """The hidden-state index whose pooled features give the best 3-fold cosine nearest-centroid accuracy on the
    training clips (never the test clips); a closed-form rule, so choosing the layer costs no iterative fits."""
    from sklearn.model_selection import StratifiedKFold

    from .fewshot import CosineNearestCentroid

    folds = list(StratifiedKFold(3, shuffle=True, random_state=seed).split(train, labels[train]))
    scores = []
    for index in range(hidden.shape[1]):
        features = hidden[train, index]
        scores.append(np.mean([CosineNearestCentroid().fit(features[a], labels[train][a])
                               .score(features[b], labels[train][b]) for a, b in folds]))
    return int(np.argmax(scores))


def markdown_table(summary: list[dict]) -> str:
    shots = sorted({r["shots"] for r in summary})
    methods = list(dict.fromkeys(r["method"] for r in sorted(summary, key=lambda r: r["method"] != "CALM")))
    cells = {(r["method"], r["shots"]): r for r in summary}
    lines = ["| method | " + " | ".join(f"{s}-shot accuracy" for s in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for method in methods:
        row = []
        for s in shots:
            r = cells[(method, s)]
            text = f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}"
            if "minus_CALM_mean" in r:
                text += f" ({100 * r['minus_CALM_mean']:+.1f}, wins {r['wins_over_CALM']}/{r['episodes']})"
            row.append(text)
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def fewshot(args: argparse.Namespace) -> dict:
    """`audiomosaic fewshot`: --shots, --best_layer and the data are checked against each other and the model's
    depth before activations are collected; the table, PNG and JSON are written together at the end."""
    from .fewshot import CALMClassifier, run_fewshot_benchmark, summarize_benchmark
    from .plots import plot_heatmap

    check_command_arguments(args, add_fewshot_arguments)
    shots = args.shots
    files, labels, train, test = labelled_data(args)
    config = encoder_config(args)
    best = args.best_layer
    if best is not None:
        best = _layer_index(best, config.num_hidden_layers + 1, "--best_layer")
    smallest, count = _smallest_class(labels[train])
    if max(shots) > count:
        raise ValueError(f"--shots {max(shots)} needs {max(shots)} training clips per class; class {smallest!r} has "
                         f"{count}.")
    if best is None and count < 3:
        raise ValueError(f"Choosing the best layer (3-fold, on the training clips) needs 3 training clips per class; "
                         f"class {smallest!r} has {count}: give --best_layer.")
    model, fe, activations = encoder_activations(args, files)
    hidden = activations.hidden.numpy()
    start = time.time()
    if best is None:
        best = best_layer_by_nearest_centroid(hidden, labels, train, args.seed)
    features = {"heads": activations.head_features(), "pooled_last": hidden[:, -1], "pooled_best": hidden[:, best]}
    records = run_fewshot_benchmark(features, labels, train, test, shots=shots, episodes=args.episodes,
                                    seed=args.seed, progress=not args.quiet)
    summary = summarize_benchmark(records)
    table = markdown_table(summary)

    # Reliability map: CALM fitted on the largest shot count of the first draw.
    from .fewshot import draw_support

    support = draw_support(labels, train, max(shots), np.random.default_rng([args.seed, max(shots), 0]))
    calm = CALMClassifier().fit(features["heads"][support], labels[support])
    num_heads = model.config.num_attention_heads
    head_names = [f"b{b}h{h}" for b in range(model.config.num_hidden_layers) for h in range(num_heads)]
    payload = {"model": args.model, "data": args.data, "random_init": args.random_init, "best_layer": best,
               "train_clips": int(len(train)), "test_clips": int(len(test)), "seconds": time.time() - start,
               "summary": summary, "records": records}
    with atomic_folder(args.output_dir) as output:
        (output / "fewshot_table.md").write_text(table + "\n")
        plot_heatmap(calm.reliability_, output / "calm_reliability.png",
                     f"CALM reliability r[head, class] ({max(shots)} shots)", "class", "head (block, head)",
                     list(calm.classes_), head_names)
        write_json(output / "fewshot_results.json", payload)
    print(table)
    return payload


# ----------------------------------------------------------------------------------------------------------------------
# heads
# ----------------------------------------------------------------------------------------------------------------------


def heads(args: argparse.Namespace) -> dict:
    """`audiomosaic heads`: --top_heads, --cv and the classes to evaluate are checked against the data and the
    model's heads before activations are collected; the PNGs and JSON are written together at the end."""
    check_command_arguments(args, add_heads_arguments)
    files, labels, train, test = labelled_data(args)
    config = encoder_config(args)
    total_heads = config.num_hidden_layers * config.num_attention_heads
    if args.top_heads >= total_heads:
        raise ValueError(f"--top_heads {args.top_heads}: the model has {total_heads} heads ({config.num_hidden_layers} "
                         f"blocks x {config.num_attention_heads}); expected at most {total_heads - 1}, so that random "
                         "heads remain to compare with.")
    rng = np.random.default_rng(args.seed)
    probed = np.sort(rng.permutation(train)[: args.max_probe_clips])  # training clips only
    counts = {str(name): int((labels[probed] == name).sum()) for name in sorted(set(labels[train]))}
    smallest = min(counts, key=counts.get)
    if counts[smallest] < args.cv:
        raise ValueError(f"--cv {args.cv} needs {args.cv} probed training clips per class; class {smallest!r} has "
                         f"{counts[smallest]} (of --max_probe_clips {args.max_probe_clips}): lower --cv or add clips.")
    evaluated = sorted(map(str, set(labels[test]) & set(labels[train])))
    if len(evaluated) < 2:
        raise ValueError(f"The interventions compare classes on test clips, but only {len(evaluated)} class(es) "
                         f"{evaluated} have both training and test clips; check --test_folds.")
    model, fe, activations = encoder_activations(args, files)
    with atomic_folder(args.output_dir) as output:
        return _write_heads(args, files, labels, train, test, model, fe, activations, rng, probed, output)


def _write_heads(args, files, labels, train, test, model, fe, activations, rng, probed, output: Path) -> dict:
    """The probes and interventions of `heads`, writing PNGs and JSON into `output` (a staging folder)."""
    from .fewshot import CALMClassifier, pooled_logistic_regression
    from .heads import dose_response, evaluate_head_intervention, probe_heads, steering_directions
    from .plots import plot_dose_response, plot_heatmap

    head_vectors = activations.heads.numpy()
    blocks, num_heads = head_vectors.shape[1:3]
    timings, start = {}, time.time()
    probe = probe_heads(head_vectors[probed], labels[probed], cv=args.cv, seed=args.seed, progress=not args.quiet)
    shuffled = probe_heads(head_vectors[probed], rng.permutation(labels[probed]), cv=args.cv, seed=args.seed,
                           progress=not args.quiet)
    timings["probes_seconds"] = time.time() - start
    plot_heatmap(probe.accuracy_, output / "head_probe_accuracy.png",
                 f"per-head probe accuracy (shuffled-label control: {shuffled.accuracy_.mean():.3f})",
                 "head", "block", list(range(num_heads)), list(range(blocks)), annotate=blocks * num_heads <= 64)

    # Heads of each class: the top CALM reliabilities, fitted on the training clips only.
    calm = CALMClassifier().fit(activations.head_features()[train], labels[train])
    top = args.top_heads
    tested = set(labels[test])  # classes without test clips (e.g. a class absent from the test folds) are skipped
    heads_by_class = {name: [divmod(int(i), num_heads) for i in np.argsort(-calm.reliability_[:, c])[:top]]
                      for c, name in enumerate(calm.classes_) if name in tested}

    pooled = model.fc_norm(activations.hidden[:, -1]).detach().numpy()
    readout = pooled_logistic_regression().fit(pooled[train], labels[train])
    evaluation = np.concatenate([rng.permutation(test[labels[test] == c])[: args.max_eval_per_class]
                                 for c in heads_by_class])
    inputs = featurize_files(fe, [files[i] for i in evaluation])
    eval_labels = labels[evaluation]
    start = time.time()
    cached = {"cache_block_inputs": not args.full_forward}
    results = {"zero": evaluate_head_intervention(model, inputs, eval_labels, readout, heads_by_class, mode="zero",
                                                  n_random=args.n_random, seed=args.seed, progress=not args.quiet,
                                                  **cached)}
    mean_values = head_vectors[train].mean(axis=0)
    results["mean"] = evaluate_head_intervention(model, inputs, eval_labels, readout, heads_by_class, mode="mean",
                                                 values=mean_values, n_random=args.n_random, seed=args.seed,
                                                 progress=not args.quiet, **cached)
    timings["ablation_seconds"] = time.time() - start
    start = time.time()
    doses = dose_response(model, inputs, eval_labels, readout, heads_by_class, progress=not args.quiet, **cached)
    timings["dose_response_seconds"] = time.time() - start
    plot_dose_response(doses, output / "head_dose_response.png",
                       f"top {top} CALM heads per class, scaled (mean over {len(heads_by_class)} classes)")
    steering = []
    for name in heads_by_class:
        directions, sigma = steering_directions(head_vectors[train], labels[train], name)
        steering += evaluate_head_intervention(model, inputs, eval_labels, readout, heads_by_class, targets=[name],
                                               mode="steer", directions=directions, sigma=sigma,
                                               alpha=args.steer_alpha, n_random=0, progress=False, **cached)

    def summarise(rows):
        return {"mean_target_drop": float(np.mean([r["target_drop"] for r in rows])),
                "mean_other_drop": float(np.mean([r["other_drop"] for r in rows])),
                "mean_selectivity": float(np.mean([r["selectivity"] for r in rows])),
                "mean_random_selectivity": float(np.mean([r["random_selectivity_mean"] for r in rows]))
                if rows[0]["random_selectivity_mean"] is not None else None,
                "classes_p_below_0.05": int(sum(r["p_value"] is not None and r["p_value"] < 0.05 for r in rows))}

    payload = {"model": args.model, "data": args.data, "random_init": args.random_init, "top_heads": top,
               "probe_clips": int(len(probed)), "eval_clips": int(len(evaluation)),
               "probe_accuracy": probe.accuracy_.tolist(),
               "shuffled_probe_accuracy": shuffled.accuracy_.tolist(),
               "per_class_auroc": probe.per_class_auroc_.tolist(), "classes": [str(c) for c in probe.classes_],
               "heads_by_class": {str(k): v for k, v in heads_by_class.items()},
               "ablation": {mode: {"summary": summarise(rows), "per_class": rows} for mode, rows in results.items()},
               "steer": {"alpha": args.steer_alpha, "summary": summarise(steering) if steering else None,
                         "per_class": steering},
               "dose_response": doses, **timings}
    write_json(output / "heads_results.json", payload)
    print(json.dumps({"probe_accuracy_max": float(probe.accuracy_.max()),
                      "shuffled_probe_accuracy_mean": float(shuffled.accuracy_.mean()),
                      **{f"{m}_ablation": payload["ablation"][m]["summary"] for m in results},
                      "steer": payload["steer"]["summary"], "dose_response": doses}, indent=2))
    return payload


# ----------------------------------------------------------------------------------------------------------------------
# The options of the four commands (`modeling_audiomosaic/commands/<command>.py` parses them, the functions above
# re-check namespaces built in Python against the same declarations)
# ----------------------------------------------------------------------------------------------------------------------


def add_labelled_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="folder with one sub-folder per class, or a CSV with audio and label columns")
    parser.add_argument("--output_dir", required=True, type=output_folder, help="where JSON, tables and PNGs go")
    parser.add_argument("--cache_dir", default=None, type=output_folder,
                        help="activation cache (default: <output_dir>/cache)")
    parser.add_argument("--label_column", default="label", help="CSV column with labels (default 'label')")
    parser.add_argument("--fold_column", default=None, help="CSV column with folds")
    parser.add_argument("--test_folds", default=None,
                        help="comma-separated test folds (default: a stratified random 25 %% test split)")
    parser.add_argument("--pooling", default="mean", choices=("mean", "mean_patches", "cls", "cls+mean"),
                        help="pooling of the per-head outputs over tokens (default 'mean', cls included)")
    parser.add_argument("--random_init", action="store_true",
                        help="control: the checkpoint's architecture with random weights (seeded by --seed)")
    parser.add_argument("--seed", type=integer(minimum=0), default=0, help="seed of splits, episodes and random heads")
    add_input_arguments(parser, batch_size=32, device=False)


def add_sae_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_labelled_data_arguments(parser)
    parser.add_argument("--layer", type=integer(), default=-1,
                        help="hidden-state index (0 = embedding output, -1 = last block; default -1)")
    parser.add_argument("--mode", choices=("clip", "token"), default="clip",
                        help="'clip': one mean-pooled vector per clip; 'token': patch tokens (cls excluded)")
    parser.add_argument("--tokens_per_clip", type=integer(minimum=1), default=None,
                        help="token mode: random tokens per clip")
    parser.add_argument("--activation", choices=("topk", "relu"), default="topk", help="TopK or ReLU + L1")
    parser.add_argument("--expansion", type=number(above=0), default=4.0,
                        help="latents per input dimension (default 4)")
    parser.add_argument("--k", type=integer(minimum=1), default=32, help="active latents per input (topk; default 32)")
    parser.add_argument("--l1_coefficient", type=number(minimum=0), default=1e-3, help="L1 weight (relu)")
    parser.add_argument("--epochs", type=integer(minimum=1), default=100, help="passes over the training vectors")
    parser.add_argument("--sae_batch_size", type=integer(minimum=1), default=256, help="vectors per SAE step")
    parser.add_argument("--learning_rate", type=number(above=0), default=1e-3, help="Adam learning rate")


def add_sae_report_arguments(parser: argparse.ArgumentParser) -> None:
    add_labelled_data_arguments(parser)
    parser.add_argument("--sae", required=True, help="the sae/ folder written by `audiomosaic sae-train`")
    parser.add_argument("--top_latents", type=integer(minimum=1), default=5, help="latents listed per class")
    parser.add_argument("--top_clips", type=integer(minimum=1), default=4,
                        help="clips in the latent spectrogram figure")


def add_fewshot_arguments(parser: argparse.ArgumentParser) -> None:
    add_labelled_data_arguments(parser)
    parser.add_argument("--shots", type=integer_list(minimum=1), default=(1, 5, 20),
                        help="comma-separated shots per class (default 1,5,20)")
    parser.add_argument("--episodes", type=integer(minimum=1), default=5,
                        help="support-set draws per shot count (default 5)")
    parser.add_argument("--best_layer", type=integer(), default=None,
                        help="hidden-state index of the 'best layer' baselines (default: best 3-fold cosine "
                             "nearest-centroid accuracy on the training clips)")


def add_heads_arguments(parser: argparse.ArgumentParser) -> None:
    add_labelled_data_arguments(parser)
    parser.add_argument("--cv", type=integer(minimum=2), default=5, help="folds of the per-head probes")
    parser.add_argument("--max_probe_clips", type=integer(minimum=2), default=1500,
                        help="random training clips for the per-head probes (default 1500)")
    parser.add_argument("--top_heads", type=integer(minimum=1), default=3,
                        help="heads per class to ablate / scale (default 3; fewer than the model's heads)")
    parser.add_argument("--n_random", type=integer(minimum=0), default=10,
                        help="draws of matched random heads (default 10; 0: no p-values)")
    parser.add_argument("--max_eval_per_class", type=integer(minimum=1), default=30,
                        help="test clips per class for interventions")
    parser.add_argument("--steer_alpha", type=number(), default=5.0, help="steering strength in std units")
    parser.add_argument("--full_forward", action="store_true",
                        help="rerun the whole encoder for every intervention instead of starting at the first "
                             "edited block from cached block inputs (same results, slower; for checking)")
