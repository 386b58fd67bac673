"""CoOp's learnable prompts (Zhou et al., "Learning to Prompt for Vision-Language Models").

One `PromptLearner` serves one task: a learnable context v^t of `n_ctx` vectors [n_ctx, width]
shared by the task's classes, and per class name the fixed part of its prompt. The prompt of
class i, as token positions of the text encoder's input (CoOp's "end" class position):

    [sot] v_1 ... v_n_ctx  name_i tokens  "."  [eot]  padding (id 0) ... up to context_length

The context is initialised N(0, 0.02) or, with `ctx_init` (e.g. "a photo of a"), from the
phrase's token embeddings (then n_ctx is the phrase's token count, as in CoOp). The sot
embedding (`prefix`) and the embeddings after the context (`suffix`: name, ".", eot, padding)
are buffers computed once from the tokenizer and the encoder's token embedding, without
gradient; they are not saved in the state dict (CoOp drops them on loading too: they follow from
the class names and the frozen embedding), and `refresh` recomputes them after the embedding
is loaded.

`class_features(encoder)` runs the frozen text encoder on the assembled prompts ([C, output_dim],
not normalised). When nothing can need a gradient (the context does not require grad, or grad
is disabled), the result is cached, keyed by the context's version counter (bumped by every
in-place update: optimizer steps, `load_state_dict`), its device and dtype, the encoder and the
last `refresh`; any of them changing recomputes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn


class Tokenizer(Protocol):
    """What prompts need of a tokenizer (`drivemtl.models.language.CLIPTokenizer` has it)."""

    sot: int
    eot: int

    def encode(self, text: str) -> list[int]: ...


class TextEncoder(Protocol):
    """What prompts need of a text encoder (`drivemtl.models.language.CLIPTextEncoder`)."""

    def encode_embeddings(self, x: Tensor, eot_index: Tensor) -> Tensor: ...


def prompt_token_ids(
    class_names: Sequence[str],
    tokenizer: Tokenizer,
    n_ctx: int,
    context_length: int,
    task: str = "",
) -> tuple[Tensor, Tensor]:
    """Token ids [C, context_length] of the prompts (context positions hold 0) and eot indices [C].

    A class whose prompt (sot + n_ctx + name + "." + eot) does not fit is a ValueError naming it.
    """
    rows, eots = [], []
    for name in class_names:
        name_ids = tokenizer.encode(f"{name}.")
        ids = [tokenizer.sot] + [0] * n_ctx + name_ids + [tokenizer.eot]
        if len(ids) > context_length:
            where = f" of task {task!r}" if task else ""
            raise ValueError(
                f"class name {name!r}{where} is too long for the text encoder: its prompt has "
                f"{len(ids)} tokens ({n_ctx} context), the context length is {context_length}"
            )
        eots.append(len(ids) - 1)
        rows.append(ids + [0] * (context_length - len(ids)))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(eots, dtype=torch.long)


class PromptLearner(nn.Module):
    """A task's learnable CoOp context and its classes' fixed prompt parts (module docstring)."""

    def __init__(
        self,
        class_names: Sequence[str],
        tokenizer: Tokenizer,
        token_embedding: nn.Embedding,
        context_length: int,
        n_ctx: int = 16,
        ctx_init: str | None = None,
        task: str = "",
    ) -> None:
        super().__init__()
        if not class_names:
            raise ValueError(f"task {task!r} has no class names to prompt")
        self.task = task
        self.class_names = tuple(class_names)
        width = token_embedding.weight.shape[1]
        if ctx_init:
            phrase = tokenizer.encode(ctx_init)
            if not phrase:
                raise ValueError(f"ctx_init {ctx_init!r} has no tokens")
            with torch.no_grad():
                init = token_embedding(torch.tensor(phrase, device=token_embedding.weight.device))
            self.context = nn.Parameter(init.detach().clone().float().cpu())
        else:
            if n_ctx < 1:
                raise ValueError(f"n_ctx must be at least 1, got {n_ctx}")
            self.context = nn.Parameter(torch.empty(n_ctx, width).normal_(0.0, 0.02))
        self.n_ctx = int(self.context.shape[0])
        tokens, eot_index = prompt_token_ids(
            self.class_names, tokenizer, self.n_ctx, context_length, task
        )
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("eot_index", eot_index, persistent=False)
        self.register_buffer("prefix", torch.empty(0), persistent=False)
        self.register_buffer("suffix", torch.empty(0), persistent=False)
        self._refreshes = 0
        self._cache: tuple[Any, Tensor] | None = None
        self.refresh(token_embedding)

    @torch.no_grad()
    def refresh(self, token_embedding: nn.Embedding) -> None:
        """(Re)compute the fixed prompt parts from `token_embedding`; drops the cached features."""
        weight = token_embedding.weight
        embedded = token_embedding(self.tokens.to(weight.device)).to(self.context)
        self.prefix = embedded[:, :1].detach().clone()
        self.suffix = embedded[:, 1 + self.n_ctx :].detach().clone()
        self._refreshes += 1
        self._cache = None

    def forward(self, token_embedding: nn.Embedding | None = None) -> tuple[Tensor, Tensor]:
        """Text-encoder inputs [C, context_length, width] and their eot indices [C].

        With `token_embedding`, the fixed parts are embedded afresh with it (the buffers hold what
        the embedding gave at the last `refresh`).
        """
        prefix, suffix = self.prefix, self.suffix
        if token_embedding is not None:
            with torch.no_grad():
                embedded = token_embedding(self.tokens).to(self.context)
            prefix, suffix = embedded[:, :1], embedded[:, 1 + self.n_ctx :]
        context = self.context.to(prefix).unsqueeze(0).expand(len(self.class_names), -1, -1)
        return torch.cat((prefix, context, suffix), dim=1), self.eot_index

    def class_features(self, encoder: TextEncoder) -> Tensor:
        """The encoder's features of every class prompt, [C, output_dim] (cached, module doc)."""
        cacheable = not (self.context.requires_grad and torch.is_grad_enabled())
        key = (
            self.context._version, self.context.data_ptr(), self.context.device,
            self.context.dtype, id(encoder), self._refreshes,
        )  # fmt: skip
        if cacheable and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        if not cacheable:
            x, eot = self()
            return encoder.encode_embeddings(x, eot)
        with torch.no_grad():
            x, eot = self()
            features = encoder.encode_embeddings(x, eot)
        self._cache = (key, features)
        return features

    def extra_repr(self) -> str:
        return f"task={self.task!r}, classes={len(self.class_names)}, n_ctx={self.n_ctx}"


__all__ = ["PromptLearner", "prompt_token_ids"]
