"""Prompts encoded as A1111 encodes them: weighted words, and any length, in chunks of 75 tokens.

diffusers gives CLIP the prompt as written and cuts it at 77 tokens (75 words'
worth), so ``(fox:1.4)`` is read as brackets and a colon and everything after
the 75th token is lost. Here the prompt is read by `bot.weighting`, each run's
tokens carry its weight, and the tokens go to each text encoder in chunks of 75
(``BREAK`` starts a new one; a chunk ends early at a comma near its end), each chunk wrapped and padded to 77 exactly as
diffusers pads a whole prompt. Each chunk's hidden states are multiplied by their
tokens' weights and scaled back to the chunk's mean (A1111's "original"
emphasis); the chunks are joined along the sequence, the pooled embedding is the
first chunk's.

A prompt of at most 75 tokens without weights is one chunk of weight 1, which is
what diffusers computes itself: the same numbers, so the same image. The negative
prompt gets as many chunks as the prompt (empty ones added to the shorter, as A1111
does), since the UNet takes both at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import get_module_execution_device

from bot.weighting import parse_weights

__all__ = ["Conditioning", "chunk_counts", "encode"]

_CONTEXT = 77  # CLIP's positions: a start token, 75 of the prompt's, an end token
_CHUNK = _CONTEXT - 2
_BACKTRACK = 20  # A1111's comma_padding_backtrack: how far back from a chunk's end a comma may end it

_Tokens = list[list[tuple[int, float]]]  # chunks of (token id, weight)


@dataclass(frozen=True, slots=True)
class Conditioning:
    """What a pipeline's ``prompt_embeds`` arguments take, for one prompt and its negative."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    negative: torch.Tensor
    negative_pooled: torch.Tensor

    def kwargs(self) -> dict[str, torch.Tensor]:
        """Return the pipeline's keyword arguments."""
        return {
            "prompt_embeds": self.embeds,
            "pooled_prompt_embeds": self.pooled,
            "negative_prompt_embeds": self.negative,
            "negative_pooled_prompt_embeds": self.negative_pooled,
        }


def _pairs(pipe: Any) -> list[tuple[Any, Any]]:
    """Return the pipeline's (tokenizer, text encoder) pairs: both for the base, the second for the refiner."""
    pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
    return [(tokenizer, encoder) for tokenizer, encoder in pairs if encoder is not None]


def _tokens(pipe: Any, tokenizer: Any, text: str) -> _Tokens:
    """Return a prompt's tokens with their weights, in chunks of at most 75.

    A full chunk ends after its last comma when that is among its last 20 tokens, and the words
    after the comma start the next one (A1111's "comma padding backtrack"), so that a phrase is
    not cut in two between chunks.
    """
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    chunks: _Tokens = []
    for part in parse_weights(text) or ((),):
        chunk: list[tuple[int, float]] = []
        for run in part:
            # An embedding's token stands for all its vectors (token, token_1, …), as diffusers expands it.
            words = pipe.maybe_convert_prompt(run.text, tokenizer)
            # verbose=False: a prompt past 77 tokens is why we chunk; transformers would warn of it.
            for token in tokenizer(words, add_special_tokens=False, verbose=False).input_ids:
                if len(chunk) == _CHUNK:
                    commas = [at for at in range(_CHUNK - _BACKTRACK, _CHUNK) if chunk[at][0] == comma]
                    cut = commas[-1] + 1 if commas else _CHUNK
                    chunks.append(chunk[:cut])
                    chunk = chunk[cut:]
                chunk.append((token, run.weight))
        chunks.append(chunk)
    return chunks


def chunk_counts(pipe: Any, prompt: str, negative: str | None) -> int:
    """Return how many chunks the prompt and its negative take on this pipeline's encoders.

    Prompts of different counts cannot share a pipeline call: padded to the longer, the shorter
    one's image would change.
    """
    texts = [prompt] if negative is None else [prompt, negative]
    return max(len(chunks) for text in texts for chunks in _tokenized(pipe, text))


def _tokenized(pipe: Any, text: str) -> list[_Tokens]:
    """Return a prompt's chunks for each of the pipeline's text encoders, in `_pairs` order."""
    return [_tokens(pipe, tokenizer, text) for tokenizer, _ in _pairs(pipe)]


def _hidden(tokenizer: Any, encoder: Any, chunks: _Tokens, count: int, clip_skip: int) -> tuple[Any, Any]:
    """Return one encoder's hidden states for the chunks (padded to `count`) and its pooled output."""
    device = get_module_execution_device(encoder)
    states = []
    pooled = None
    for chunk in chunks + [[] for _ in range(count - len(chunks))]:
        ids = [tokenizer.bos_token_id, *(token for token, _ in chunk), tokenizer.eos_token_id]
        ids += [tokenizer.pad_token_id] * (_CONTEXT - len(ids))
        output = encoder(torch.tensor([ids], device=device), output_hidden_states=True)
        # The second encoder's first output is its projected, pooled embedding (the first's is not pooled).
        if pooled is None and output[0].ndim == 2:
            pooled = output[0]
        # diffusers' SDXL reads the penultimate layer; each clip skip goes one further back.
        hidden = output.hidden_states[-(clip_skip + 2)]
        weights = [1.0, *(weight for _, weight in chunk)] + [1.0] * (_CONTEXT - 1 - len(chunk))
        if any(weight != 1.0 for weight in weights):
            mean = hidden.mean()
            hidden = hidden * torch.tensor(weights, dtype=hidden.dtype, device=hidden.device)[None, :, None]
            hidden = hidden * (mean / hidden.mean())
        states.append(hidden)
    return torch.cat(states, dim=1), pooled


def _side(pipe: Any, tokenized: list[_Tokens], count: int, clip_skip: int) -> tuple[torch.Tensor, torch.Tensor]:
    hidden, pooled = [], None
    for (tokenizer, encoder), chunks in zip(_pairs(pipe), tokenized, strict=True):
        states, last_pooled = _hidden(tokenizer, encoder, chunks, count, clip_skip)
        hidden.append(states)
        pooled = last_pooled if last_pooled is not None else pooled
    assert pooled is not None, "SDXL's second text encoder gives the pooled embedding"
    return torch.cat(hidden, dim=-1), pooled


def encode(pipe: Any, prompt: str, negative: str | None, clip_skip: int) -> Conditioning:
    """Encode a prompt and its negative for an SDXL pipeline (the base: both encoders; the refiner: the second).

    Args:
        pipe: the pipeline whose tokenizers and text encoders read the prompt.
        prompt: as the user wrote it (`bot.weighting` reads it).
        negative: the negative prompt, likewise; None: none (zeros, where the model was trained so).
        clip_skip: layers skipped from the end, past diffusers' penultimate one (on the negative
            prompt too, as A1111 skips them; diffusers' own encoding skips none there).
    """
    # Each text tokenized once; the count is `chunk_counts`' (an empty negative is one chunk, never more).
    positive = _tokenized(pipe, prompt)
    # SDXL's base was trained with zeros for no negative prompt, as diffusers gives it.
    zeroed = negative is None and pipe.config.force_zeros_for_empty_prompt
    negatives = [] if zeroed else _tokenized(pipe, negative or "")
    count = max(len(chunks) for chunks in positive + negatives)
    with torch.inference_mode():
        embeds, pooled = _side(pipe, positive, count, clip_skip)
        if zeroed:
            return Conditioning(embeds, pooled, torch.zeros_like(embeds), torch.zeros_like(pooled))
        negative_embeds, negative_pooled = _side(pipe, negatives, count, clip_skip)
    return Conditioning(embeds, pooled, negative_embeds, negative_pooled)
