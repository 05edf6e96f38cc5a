"""Processor of the AudioMosaic audio-language model: the AudioMosaic feature extractor plus the language model's
tokenizer, with LTU's instruction template, audio placeholder expansion, padding and training labels."""

from transformers import BatchFeature, ProcessorMixin


IGNORE_INDEX = -100

# LTU's `alpaca_short` template (YuanGongND/ltu, src/ltu/templates/alpaca_short.json, no-input form); the answer
# follows the final newline directly.
LTU_PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"


class AudioMosaicLtuProcessor(ProcessorMixin):
    r"""
    Turns (audio, prompt[, answer]) into the inputs of [`AudioMosaicLtuForConditionalGeneration`].

    Each `audio_token` in a prompt is expanded to `num_audio_tokens` copies, whose embeddings the model replaces by
    the clip's audio tokens. [`~AudioMosaicLtuProcessor.build_prompt`] writes the authors' layout: the audio first,
    then BOS and LTU's instruction template.

    Args:
        feature_extractor ([`AudioMosaicFeatureExtractor`]): log-Mel features; for the released LTU model 1024
            frames with LTU's normalisation `(x + 5.081) / 4.4849` (mean -5.081, std 2.24245).
        tokenizer ([`PreTrainedTokenizerBase`]): the language model's tokenizer; it must know `audio_token`.
        audio_token (`str`, defaults to `"<audio>"`): the placeholder written in prompts.
        num_audio_tokens (`int`, defaults to 32): audio tokens per clip (`model.config.num_audio_tokens`).
        prompt_template (`str`, defaults to LTU's `alpaca_short`): instruction template with `{instruction}`.
        chat_template (`str`, *optional*): unused by this processor, kept for the `ProcessorMixin` interface.
    """

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        audio_token: str = "<audio>",
        num_audio_tokens: int = 32,
        prompt_template: str = LTU_PROMPT_TEMPLATE,
        chat_template: str | None = None,
    ):
        if "{instruction}" not in prompt_template:
            raise ValueError(f"`prompt_template` must contain '{{instruction}}', got {prompt_template!r}.")
        if num_audio_tokens <= 0:
            raise ValueError(f"`num_audio_tokens` must be positive, got {num_audio_tokens}.")
        self.audio_token = audio_token
        self.num_audio_tokens = num_audio_tokens
        self.prompt_template = prompt_template
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)
        ids = tokenizer.convert_tokens_to_ids([audio_token])
        if ids[0] is None or ids[0] == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer does not know the audio placeholder {audio_token!r}; add it first with "
                f"`tokenizer.add_special_tokens({{'additional_special_tokens': [{audio_token!r}]}})`."
            )
        self.audio_token_id = ids[0]

    def build_prompt(self, instruction: str) -> str:
        """The authors' layout: the audio placeholder, then BOS, then the instruction template."""
        bos = self.tokenizer.bos_token or ""
        return self.audio_token + bos + self.prompt_template.format(instruction=instruction)

    def __call__(
        self,
        text: str | list[str],
        audio=None,
        answers: str | list[str] | None = None,
        sampling_rate: int | None = None,
        train_on_prompt: bool = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """
        Args:
            text: prompt(s), each with one `audio_token` per clip (see `build_prompt`).
            audio: clip(s) in any form [`AudioMosaicFeatureExtractor`] accepts (arrays, paths), in placeholder order.
            answers: target answer per prompt. When given, the answer and EOS are appended and `labels` returned:
                the ids themselves, with -100 at padding, audio placeholders and BOS, and also on the prompt when
                `train_on_prompt=False` (the authors train on the prompt too).
            sampling_rate: rate of array inputs (resampled to the feature extractor's rate).
            max_length: cut longer sequences to this many tokens (placeholders included; EOS only when there is
                room, as in the authors' data preparation).
            pad_to_multiple_of: pad the batch to a multiple of this (the authors use 8). The padding side is the
                tokenizer's (`padding_side="left"` for generation and for the authors' layout).
        """
        texts = [text] if isinstance(text, str) else list(text)
        if answers is not None:
            answers = [answers] if isinstance(answers, str) else list(answers)
            if len(answers) != len(texts):
                raise ValueError(f"Got {len(texts)} prompts but {len(answers)} answers; give one answer per prompt.")
        num_placeholders = sum(t.count(self.audio_token) for t in texts)
        num_clips = 0 if audio is None else (1 if isinstance(audio, str) or getattr(audio, "ndim", 2) == 1
                                              else len(audio))
        if num_placeholders != num_clips:
            raise ValueError(
                f"Found {num_placeholders} {self.audio_token!r} placeholder(s) in the prompts but {num_clips} clip(s); "
                "write one placeholder per clip (e.g. with `build_prompt`)."
            )
        tokenizer = self.tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token; set `tokenizer.pad_token` (the authors use id 0).")

        rows, label_rows = [], []
        for index, prompt in enumerate(texts):
            prompt = prompt.replace(self.audio_token, self.audio_token * self.num_audio_tokens)
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            prompt_length = len(ids)
            if answers is not None:
                ids = tokenizer(prompt + answers[index], add_special_tokens=False)["input_ids"]
            if max_length is not None and len(ids) > max_length:
                if self.audio_token_id in ids[max_length:]:
                    raise ValueError(f"`max_length` {max_length} would cut audio placeholders of prompt {index}.")
                ids = ids[:max_length]
            if answers is not None and (max_length is None or len(ids) < max_length):
                ids = ids + [tokenizer.eos_token_id]
            rows.append(ids)
            if answers is not None:
                labels = [IGNORE_INDEX if (token in (self.audio_token_id, tokenizer.bos_token_id)
                                           or (not train_on_prompt and position < prompt_length)) else token
                          for position, token in enumerate(ids)]
                label_rows.append(labels)

        length = max(len(ids) for ids in rows)
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        left = tokenizer.padding_side == "left"

        def pad(values: list[int], value: int) -> list[int]:
            padding = [value] * (length - len(values))
            return padding + values if left else values + padding

        data = {
            "input_ids": [pad(ids, tokenizer.pad_token_id) for ids in rows],
            "attention_mask": [pad([1] * len(ids), 0) for ids in rows],
        }
        if answers is not None:
            data["labels"] = [pad(labels, IGNORE_INDEX) for labels in label_rows]
        if audio is not None:
            # Every clip is padded/truncated to the encoder's length, as in the authors' data preparation.
            features = self.feature_extractor(audio, sampling_rate=sampling_rate, truncation=True,
                                              return_tensors=return_tensors)
            data["input_values"] = features["input_values"]
        return BatchFeature(data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_values"]


__all__ = ["AudioMosaicLtuProcessor", "LTU_PROMPT_TEMPLATE"]
