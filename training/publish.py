"""Publish a trained AudioMosaic run: checkpoint folder, `results.json`, model card, optional Hub upload.

The fine-tuning and probing scripts call [`publish_run`] at the end of training; it can also be run on an existing
run folder (one holding `results.json` and a saved model), e.g. to push it later:

    python training/publish.py runs/spc --hub_model_id me/audiomosaic-spc --push_to_hub

The folder is what `save_pretrained` writes (`config.json` with `auto_map` for every Auto class,
`model.safetensors`, `preprocessor_config.json`, the package's modeling files for `trust_remote_code=True`), plus
`results.json` and `README.md`: the card is rendered from `model_card.md` (a Jinja template shipped with the package)
with `huggingface_hub.ModelCardData`, whose `model-index` carries one entry per metric (task, dataset, metric, value).
Nothing here touches the network unless `push_to_hub` is set.
"""

import argparse
import json
import logging
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedModel

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor
from modeling_audiomosaic.inputs import command_parser
from modeling_audiomosaic.model_cards import render_model_card


logger = logging.getLogger("audiomosaic.publish")

# Metrics that go into the model-index, with the Hub's metric ids.
CARD_METRICS = {"accuracy": "accuracy", "mAP": "mean_average_precision", "mAUC": "roc_auc", "eer": "eer",
                "auc": "roc_auc"}
# Files of a run folder that are not part of the published model.
IGNORE_ON_PUSH = ["checkpoint-*", "checkpoint-*/**", "runs/**", "fold_*/checkpoint-*/**", "*.pt", "cache/**",
                  "features/**"]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _dataset_name(results: dict) -> str:
    source = str(results.get("dataset") or "unknown")
    path = Path(source)
    if path.exists():  # local data: name it by its folder (a local path is meaningless on the Hub)
        return (path.parent.name if path.is_file() else path.name) or source
    return source


def _eval_split(results: dict) -> str:
    if results.get("eval_folds") is not None:
        return f"fold {results['eval_folds']}"
    if results.get("cross_validation_folds"):
        return f"{len(results['cross_validation_folds'])}-fold cross-validation"
    return results.get("eval_split") or "eval"


def build_model_card(results: dict, config: AudioMosaicConfig | None = None,
                     feature_extractor: AudioMosaicFeatureExtractor | None = None, model_id: str | None = None,
                     template_path: str | Path | None = None) -> ModelCard:
    """Model card for a run: YAML front matter from `ModelCardData` (with `eval_results` -> `model-index`) and the
    body from the `model_card.md` template."""
    model_id = model_id or "audiomosaic-classifier"
    dataset_name = _dataset_name(results)
    split = _eval_split(results)
    eval_metrics = {k: v for k, v in (results.get("eval") or {}).items() if k in CARD_METRICS and _finite(v)}
    eval_results = [
        EvalResult(
            task_type="audio-classification",
            task_name="Audio Classification",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=CARD_METRICS[name],
            metric_name=name,
            metric_value=round(float(value), 6),
        )
        for name, value in eval_metrics.items()
    ]
    base_model = results.get("model_name_or_path")
    if base_model and Path(str(base_model)).exists():
        base_model = None  # local folders are not Hub references
    card_data = ModelCardData(
        license="mit",
        library_name="transformers",
        pipeline_tag="audio-classification",
        tags=["audio", "audio-classification", "audiomosaic", "custom_code"],
        datasets=[dataset_name] if "/" in dataset_name else None,
        metrics=sorted({CARD_METRICS[n] for n in eval_metrics}) or None,
        base_model=base_model or None,
        model_name=model_id,
        eval_results=eval_results or None,
    )
    labels = list(results.get("labels") or [])
    hidden = getattr(config, "hidden_size", "?")
    max_length = results.get("max_length") or getattr(config, "max_length", None)
    num_parameters = results.get("num_parameters")
    training_keys = ["script", "recipe", "loss", "learning_rate", "blr", "effective_batch_size", "layer_decay",
                     "num_train_epochs", "seed", "num_train_examples", "train_folds", "probe"]
    training = [(k, results[k]) for k in training_keys if results.get(k) not in (None, "")]
    metric_rows = [{"name": k, "value": f"{v:.4f}" if _finite(v) else v}
                   for k, v in (results.get("eval") or {}).items()
                   if _finite(v) and not k.endswith(("runtime", "per_second", "epoch")) and k != "loss"]
    kind = results.get("classifier_type") or getattr(config, "classifier_type", "linear")
    summary = (
        f"AudioMosaic audio classifier ({kind} head) trained on `{dataset_name}` with "
        f"{len(labels)} classes." if labels else "AudioMosaic audio classifier."
    )
    template_kwargs = {
        "model_id": model_id,
        "model_name": model_id,
        "model_summary": summary,
        "hidden_size": hidden,
        "num_hidden_layers": getattr(config, "num_hidden_layers", "?"),
        "num_attention_heads": getattr(config, "num_attention_heads", "?"),
        "num_parameters": f"{num_parameters / 1e6:.2f}M" if num_parameters else "?",
        "classifier_type": kind,
        "freeze_encoder": bool(results.get("freeze_encoder") or getattr(config, "freeze_encoder", False)),
        "num_labels": len(labels),
        "multi_label": results.get("loss") == "bce"
        or getattr(config, "problem_type", None) == "multi_label_classification",
        "max_length": max_length,
        "seconds": f"{max_length / 100:g}" if max_length else "?",
        "norm_mean": getattr(feature_extractor, "mean", "?"),
        "norm_std": getattr(feature_extractor, "std", "?"),
        "base_model": results.get("model_name_or_path") or "random initialisation",
        "eval_description": f"`{dataset_name}`, {split} ({results.get('num_eval_examples', '?')} clips)",
        "metrics": metric_rows,
        "training": training,
        "labels_preview": ", ".join(f"`{name}`" for name in labels[:50]) + (" ..." if len(labels) > 50 else ""),
        "limitations": results.get("limitations") or (
            "Scores are for the evaluation split named above only. Inputs longer than the training length are "
            "truncated unless split into windows (`long_audio=\"window\"` in the feature extractor)."
        ),
    }
    return render_model_card(card_data, template_path, **template_kwargs)


def write_results(output_dir: str | Path, results: dict) -> Path:
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


def push_folder(folder: str | Path, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload AudioMosaic model") -> str:
    """Create the Hub repo (if needed) and upload the run folder without training checkpoints and caches."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=bool(private), exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             ignore_patterns=IGNORE_ON_PUSH, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def publish_run(output_dir: str | Path, results: dict, model: PreTrainedModel | None = None,
                feature_extractor: AudioMosaicFeatureExtractor | None = None, push_to_hub: bool = False,
                hub_model_id: str | None = None, hub_token: str | None = None, hub_private_repo: bool | None = None,
                template_path: str | Path | None = None) -> Path:
    """Write the checkpoint folder (`model.save_pretrained` + feature extractor, both with `auto_map`),
    `results.json` and `README.md` to `output_dir`; upload it when `push_to_hub`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = None
    if model is not None:
        model.save_pretrained(output_dir)
        config = model.config
        results.setdefault("num_parameters", sum(p.numel() for p in model.parameters()))
    elif (output_dir / "config.json").is_file():
        from modeling_audiomosaic import AudioMosaicConfig

        config = AudioMosaicConfig.from_pretrained(output_dir)
    if feature_extractor is not None:
        feature_extractor.save_pretrained(output_dir)
    elif (output_dir / "preprocessor_config.json").is_file():
        from modeling_audiomosaic import AudioMosaicFeatureExtractor

        feature_extractor = AudioMosaicFeatureExtractor.from_pretrained(output_dir)
    if push_to_hub and not hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (user/name).")
    model_id = hub_model_id or output_dir.resolve().name
    write_results(output_dir, results)
    card = build_model_card(results, config, feature_extractor, model_id=model_id, template_path=template_path)
    card.save(output_dir / "README.md")
    if push_to_hub:
        url = push_folder(output_dir, hub_model_id, token=hub_token, private=hub_private_repo)
        logger.info("Pushed %s to %s", output_dir, url)
    return output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder with results.json and a saved model (config.json, weights)")
    parser.add_argument("--hub_model_id", default=None, help="Hub repository id, user/name")
    parser.add_argument("--push_to_hub", action="store_true", help="upload the folder to the Hub")
    parser.add_argument("--hub_private_repo", action="store_true", help="create the repository as private")
    parser.add_argument("--hub_token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--model_card_template", default=None, help="Jinja template (default: model_card.md)")


def run(args: argparse.Namespace) -> Path:
    run_dir = Path(args.run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} does not exist: publish needs a finished run folder.")
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no saved model (config.json); nothing to publish.")
    results = json.loads(results_path.read_text())
    out = publish_run(run_dir, results, push_to_hub=args.push_to_hub, hub_model_id=args.hub_model_id,
                      hub_token=args.hub_token, hub_private_repo=args.hub_private_repo,
                      template_path=args.model_card_template)
    print(f"Wrote {out / 'README.md'}" + (f" and pushed to {args.hub_model_id}" if args.push_to_hub else ""))
    return out


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO)
    return run(command_parser("publish", __doc__, add_arguments).parse_args(argv))


if __name__ == "__main__":
    main()
