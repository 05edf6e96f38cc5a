"""A small LTU-style audio-language model trained end to end on this machine's CPU: the machinery, not the paper.

No LLM weights can be downloaded here, so everything is built locally:

1. Instruction data from the labels of `../shared/data` (training folds 1-4, held-out fold 5):
   Speech Commands "What word is spoken?" -> the word, drum kits "Which drum is this?" -> the drum type, and
   closed-ended questions ("Is the word up spoken?" / "Is this a kick drum?" -> yes/no) for stage 3.
2. A byte-level BPE tokenizer trained with `tokenizers` on that text, and a tiny LLaMA (`LlamaConfig`, 2 layers,
   width 128) trained briefly on the text alone, with the label word written where the audio tokens will be (a
   stand-in for the pretrained Vicuna: it learns the template, the answer vocabulary and to answer from its
   context, never the audio). A first run whose LM saw no such context learned nothing from the audio (chance
   accuracy; benchmarks/RESULTS.md).
3. An audio encoder: a small AudioMosaic (192 wide, 4 blocks, 1.28 s clips) pretrained briefly with
   `training/pretrain.py` (`pretrain_small_cpu.yaml`, `--pretrain_steps` steps on the training folds' audio), or
   `--encoder FOLDER` to use an existing one.
4. The four-stage LTU curriculum with `python -m audiomosaic_training.ltu` and the authors' recipes (trainable parts, LoRA
   r 8 / alpha 16 on q_proj/v_proj, warm-up + linear decay), with CPU-sized batches, epochs and learning rates
   (`STAGES` below) and the loss on the answers only (the authors also train on the prompt), once with the
   pretrained encoder and once with the same encoder randomly initialised.
5. Greedy generated answers on the held-out fold: exact-match accuracy of "What word is spoken?" / "Which drum is
   this?", examples, and the CPU time of each stage; written to `OUTPUT_DIR/summary.json`.

    python examples/ltu_demo.py --output_dir runs/ltu_demo      # with the package installed ([train,ltu])

About 20 minutes on a 2-core CPU with the defaults. Figures: benchmarks/RESULTS.md, section "Audio-language model".
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from modeling_audiomosaic.processing_audiomosaic_ltu import LTU_PROMPT_TEMPLATE


ROOT = Path(__file__).resolve().parents[1]
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
TASKS = {  # data folder -> (classification instruction, closed-ended question, label -> answer text)
    "speechcommands_test": ("What word is spoken?", "Is the word {} spoken?", lambda label: label),
    "drumkits": ("Which drum is this?", "Is this a {} drum?", lambda label: label.replace("other_perc", "percussion")),
}
# The four stages: recipe, data, and the CPU-sized overrides of the demo (the recipes hold the authors' values).
STAGES = [
    ("ltu_stage1_projector.yaml", "classification", {"learning_rate": "1e-3"}),
    ("ltu_stage2_all_cla.yaml", "classification", {"learning_rate": "5e-4"}),
    ("ltu_stage3_all_closed.yaml", "closed", {"learning_rate": "5e-4"}),
    ("ltu_stage4_all_mix.yaml", "mix", {"learning_rate": "5e-4"}),
]
SMALL_ENCODER = "hidden_size=192,num_hidden_layers=4,num_attention_heads=3,intermediate_size=768,max_length=128"


def read_rows(data_dir: Path, per_class_train: int, per_class_eval: int, seed: int) -> tuple[list, list]:
    """(audio, task, label-answer) rows of folds 1-4 (train) and fold 5 (eval), capped per class and fold split."""
    rng = random.Random(seed)
    train, held_out = [], []
    for folder, (instruction, _, answer_of) in TASKS.items():
        with open(data_dir / folder / "meta.csv") as handle:
            rows = [row for row in csv.DictReader(handle) if folder != "speechcommands_test" or row["label"] in WORDS]
        rng.shuffle(rows)
        counts = {}
        for row in rows:
            split = "eval" if row["fold"] == "5" else "train"
            key = (split, row["label"])
            if counts.get(key, 0) >= (per_class_eval if split == "eval" else per_class_train):
                continue
            counts[key] = counts.get(key, 0) + 1
            record = {"audio": str((data_dir / folder / row["filename"]).resolve()), "task": folder,
                      "label": answer_of(row["label"]), "instruction": instruction, "answer": answer_of(row["label"])}
            (held_out if split == "eval" else train).append(record)
    return train, held_out


def closed_ended(rows: list[dict], seed: int) -> list[dict]:
    """One yes/no question per row, about its own label or another label of its task (half each)."""
    rng = random.Random(seed)
    answers = {task: sorted({row["answer"] for row in rows if row["task"] == task}) for task in TASKS}
    questions = []
    for row in rows:
        others = [answer for answer in answers[row["task"]] if answer != row["answer"]]
        asked = row["answer"] if rng.random() < 0.5 else rng.choice(others)
        questions.append({**row, "instruction": TASKS[row["task"]][1].format(asked),
                          "answer": "yes" if asked == row["answer"] else "no"})
    return questions


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "task", "label", "instruction", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_language_model(rows: list[dict], folder: Path, steps: int, seed: int) -> float:
    """Byte-level BPE tokenizer + a tiny LLaMA trained on the rows' text alone; returns CPU seconds.

    Each training text starts with the row's label word where the audio tokens will be (`label<s>### Instruction:
    ...### Response:\nanswer</s>`), so the LM learns to answer from what precedes BOS, as a pretrained LLM answers
    from its context; the curriculum then has to make the audio tokens carry that information."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    start = time.process_time()
    texts = [row["label"] + "<s>" + LTU_PROMPT_TEMPLATE.format(instruction=row["instruction"]) + row["answer"]
             + "</s>" for row in rows]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<unk>", padding_side="left")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(seed)
    for step in range(steps):
        batch = tokenizer(rng.sample(texts, 64), add_special_tokens=False, padding=True, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            print(f"  text LM step {step}: loss {loss.item():.3f}", flush=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return time.process_time() - start


def run_module(module: str, arguments: list[str]) -> float:
    """`python -m module arguments` on one thread; returns its CPU seconds."""
    command = [sys.executable, "-m", module, *arguments]
    print("$ " + " ".join(command), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    before = os.times()
    subprocess.run(command, check=True, env=env)
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


def pretrain_encoder(train_rows: list[dict], output_dir: Path, steps: int) -> float:
    audio_list = write_csv([{**row, "instruction": "", "answer": ""} for row in train_rows],
                           output_dir / "pretrain_audio.csv")
    return run_module("audiomosaic_training.pretrain", [
        "--recipe", "pretrain_small_cpu", "--dataset", str(audio_list),
        "--output_dir", str(output_dir / "encoder"), "--max_steps", str(steps), "--per_device_train_batch_size", "64",
        "--warmup_steps", str(max(steps // 10, 1)), "--save_steps", str(steps), "--effective_rank_steps",
        str(steps), "--dataloader_num_workers", "0"])


def run_curriculum(name: str, start_arguments: list[str], data: dict[str, Path], eval_csv: Path, output_dir: Path,
                   args: argparse.Namespace) -> dict:
    previous, stage_seconds, results = None, [], {}
    for index, (recipe, data_name, overrides) in enumerate(STAGES, start=1):
        stage_dir = output_dir / name / f"stage{index}"
        arguments = ["--recipe", recipe, "--dataset", str(data[data_name]),
                     "--output_dir", str(stage_dir),
                     "--num_train_epochs", str(args.epochs), "--per_device_train_batch_size", str(args.batch_size),
                     "--gradient_accumulation_steps", "1", "--warmup_steps", "10", "--bf16", "false",
                     "--use_cpu", "true", "--save_strategy", "no", "--logging_steps", "20", "--disable_tqdm", "true",
                     "--dataloader_num_workers", "0", "--seed", str(args.seed),
                     "--audio_pooling", args.audio_pooling, "--train_on_prompt", "false"]
        for key, value in overrides.items():
            arguments += [f"--{key}", value]
        arguments += (start_arguments if previous is None else ["--model_name_or_path", str(previous)])
        if index == len(STAGES):
            arguments += ["--eval_dataset", str(eval_csv), "--per_device_eval_batch_size", "64",
                          "--eval_max_new_tokens", "6", "--num_examples", "100000"]
        stage_seconds.append(run_module("audiomosaic_training.ltu", arguments))
        previous = stage_dir
    results = json.loads((previous / "results.json").read_text())["eval"]
    return {"stage_cpu_seconds": stage_seconds, **results}


def per_task_accuracy(examples: list[dict]) -> dict:
    by_task = {}
    for example in examples:
        by_task.setdefault(example["instruction"], []).append(example["correct"])
    return {task: sum(hits) / len(hits) for task, hits in by_task.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--encoder", default=None, help="pretrained AudioMosaic folder (default: pretrain one here)")
    parser.add_argument("--pretrain_steps", type=int, default=100)
    parser.add_argument("--per_class_train", type=int, default=120)
    parser.add_argument("--per_class_eval", type=int, default=30)
    parser.add_argument("--text_lm_steps", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--audio_pooling", default="official", choices=("official", "time"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    train, held_out = read_rows(Path(args.data_dir), args.per_class_train, args.per_class_eval, args.seed)
    closed = closed_ended(train, args.seed)
    data = {"classification": write_csv(train, output_dir / "classification.csv"),
            "closed": write_csv(closed, output_dir / "closed.csv"),
            "mix": write_csv(random.Random(args.seed).sample(train + closed, len(train)), output_dir / "mix.csv")}
    eval_csv = write_csv(held_out, output_dir / "eval.csv")
    print(f"{len(train)} training rows (folds 1-4), {len(held_out)} held-out rows (fold 5)", flush=True)

    lm_seconds = build_language_model(train + closed, output_dir / "language_model", args.text_lm_steps, args.seed)
    encoder_seconds = 0.0
    encoder = args.encoder
    if encoder is None:
        encoder_seconds = pretrain_encoder(train, output_dir, args.pretrain_steps)
        encoder = str(output_dir / "encoder")

    language_model = ["--language_model", str(output_dir / "language_model")]
    variants = {
        "pretrained_encoder": language_model + ["--audio_encoder", encoder],
        "random_encoder": language_model + ["--audio_config_overrides", SMALL_ENCODER,
                                            "--feature_extractor_preset", "speechcommands"],
    }
    summary = {"train_rows": len(train), "held_out_rows": len(held_out), "text_lm_cpu_seconds": lm_seconds,
               "encoder_pretraining_cpu_seconds": encoder_seconds, "encoder": encoder,
               "stage_overrides": {recipe: overrides for recipe, _, overrides in STAGES},
               "epochs_per_stage": args.epochs, "batch_size": args.batch_size, "audio_pooling": args.audio_pooling,
               "train_on_prompt": False}
    for name, start_arguments in variants.items():
        result = run_curriculum(name, start_arguments, data, eval_csv, output_dir, args)
        result["accuracy_by_instruction"] = per_task_accuracy(result["examples"])
        summary[name] = result
        print(f"{name}: held-out accuracy {result['accuracy']:.3f} {result['accuracy_by_instruction']}; "
              f"stage CPU seconds {[round(s) for s in result['stage_cpu_seconds']]}", flush=True)
    summary["chance"] = {TASKS["speechcommands_test"][0]: 1 / len(WORDS),
                         TASKS["drumkits"][0]: 1 / len({row["answer"] for row in train if row["task"] == "drumkits"})}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({key: value for key, value in summary.items() if not isinstance(value, dict)}, indent=2))
    for name in variants:
        for example in summary[name]["examples"][:: max(len(summary[name]["examples"]) // 8, 1)][:8]:
            print(f"  [{name}] {example['instruction']} -> {example['generated']!r} "
                  f"(reference {example['reference']!r})")


if __name__ == "__main__":
    main()
