"""Turning prompt texts into model inputs: chat template, tokenization, left-padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from corevital.capture.messages import Prompt, check_messages, prompt_text
from corevital.capture.records import PromptRecord
from corevital.errors import InputError

ChatTemplateMode = Literal["auto", "on", "off"]


@dataclass
class PreparedBatch:
    prompts: list[PromptRecord]
    input_ids: torch.Tensor  # [B, P] padded (left for decoder-only, right for encoder-decoder)
    attention_mask: torch.Tensor  # [B, P]

    @property
    def padded_length(self) -> int:
        return int(self.input_ids.shape[1])


def uses_chat_template(tokenizer: Any, mode: ChatTemplateMode) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has_template:
        raise InputError("--chat-template on: this tokenizer has no chat template")
    return has_template and mode != "off"


def format_prompt(tokenizer: Any, text: Prompt, mode: ChatTemplateMode) -> tuple[str, bool]:
    """What the model reads and whether the chat template was applied.

    Chat messages are always rendered with the tokenizer's chat template (``mode`` off, or a
    tokenizer without one, is an InputError); a string is wrapped as one user message when ``mode``
    says so.
    """
    if not isinstance(text, str):
        messages = check_messages(text)
        if mode == "off" or not getattr(tokenizer, "chat_template", None):
            raise InputError(
                "chat messages need the tokenizer's chat template"
                + (" (chat_template is off)" if mode == "off" else ": this tokenizer has none")
            )
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(rendered), True
    if not text.strip():
        raise InputError("the prompt is empty")
    if not uses_chat_template(tokenizer, mode):
        return text, False
    messages = [{"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(rendered), True


def prepare_batch(
    tokenizer: Any,
    texts: Sequence[Prompt],
    *,
    chat_template: ChatTemplateMode,
    device: torch.device,
    is_encoder_decoder: bool,
) -> PreparedBatch:
    if not texts:
        raise InputError("no prompt given")
    prepared: list[PromptRecord] = []
    for text in texts:
        model_text, applied = format_prompt(tokenizer, text, chat_template)
        # A chat template already carries the special tokens the model expects.
        ids = tokenizer(model_text, add_special_tokens=not applied)["input_ids"]
        if not ids:
            raise InputError("the prompt has no tokens after tokenization")
        prepared.append(PromptRecord(prompt_text(text), model_text, list(map(int, ids)), applied))
    length = max(len(p.token_ids) for p in prepared)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = not is_encoder_decoder
    rows, masks = [], []
    for p in prepared:
        pad = length - len(p.token_ids)
        rows.append(([pad_id] * pad + p.token_ids) if left else (p.token_ids + [pad_id] * pad))
        masks.append(([0] * pad + [1] * len(p.token_ids)) if left else ([1] * len(p.token_ids) + [0] * pad))
    return PreparedBatch(
        prompts=prepared,
        input_ids=torch.tensor(rows, dtype=torch.long, device=device),
        attention_mask=torch.tensor(masks, dtype=torch.long, device=device),
    )


def repeat_batch(batch: PreparedBatch, times: int) -> PreparedBatch:
    """Each prompt ``times`` times in a row (``num_return_sequences``: row ``b * times + j``)."""
    if times == 1:
        return batch
    return PreparedBatch(
        prompts=[p for p in batch.prompts for _ in range(times)],
        input_ids=batch.input_ids.repeat_interleave(times, dim=0),
        attention_mask=batch.attention_mask.repeat_interleave(times, dim=0),
    )


def check_token_budget(prompt_tokens: int, max_new_tokens: int, context_length: int | None) -> None:
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
    if context_length is not None and prompt_tokens + max_new_tokens > context_length:
        raise InputError(
            f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"context window of {context_length} tokens"
        )


def batch_from_inputs(
    tokenizer: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> PreparedBatch:
    """A :class:`PreparedBatch` for inputs the user tokenized themselves (``monitor.watch``)."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    prompts = []
    for row, row_mask in zip(input_ids.tolist(), mask.tolist(), strict=True):
        ids = [int(t) for t, keep in zip(row, row_mask, strict=True) if keep]
        prompts.append(
            PromptRecord(
                text=tokenizer.decode(ids, skip_special_tokens=True),
                model_text=tokenizer.decode(ids),
                token_ids=ids,
                chat_template_applied=False,
            )
        )
    return PreparedBatch(prompts=prompts, input_ids=input_ids, attention_mask=mask)
