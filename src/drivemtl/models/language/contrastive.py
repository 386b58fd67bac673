"""A CLIP-shaped image-text model (ModifiedResNet + text transformer) and its contrastive loss.

What LV-Adapter starts from when OpenAI's weights are not at hand: a small CLIP trained here on
image-caption pairs (e.g. `drivemtl.data.captions` of the synthetic world), saved with OpenAI's key
names (`visual.*`, the text keys, `logit_scale`) so that `clip_rn50` and `lv_adapter` load it like
the released RN50 checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.backbones.clip_resnet import ModifiedResNet
from drivemtl.models.language.clip_text import CLIPTextEncoder

INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature
MAX_LOGIT_SCALE = 100.0  # CLIP clips exp(logit_scale) at 100


class CLIPModel(nn.Module):
    """Image tower, text tower and the learnable temperature of CLIP."""

    def __init__(self, visual: ModifiedResNet, text: CLIPTextEncoder) -> None:
        super().__init__()
        if int(visual.output_dim) != int(text.output_dim):
            raise ValueError(
                f"image embedding size {visual.output_dim} differs from the text's {text.output_dim}"
            )
        self.visual = visual
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))

    def encode_image(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings [N, E]."""
        return F.normalize(self.visual.embed(images), dim=-1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """L2-normalised text embeddings [M, E] of token ids [M, L]."""
        return F.normalize(self.text.encode(tokens), dim=-1)

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        """Image-to-text logits [N, M]: the scaled cosine similarities."""
        scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return scale * self.encode_image(images) @ self.encode_text(tokens).t()

    def openai_state_dict(self) -> dict[str, Tensor]:
        """The weights under OpenAI's CLIP key names (what `clip_rn50` / `lv_adapter` read)."""
        state = {f"visual.{k}": v.detach().clone() for k, v in self.visual.state_dict().items()}
        state.update({k: v.detach().clone() for k, v in self.text.state_dict().items()})
        state["logit_scale"] = self.logit_scale.detach().clone()
        return state


def contrastive_loss(logits: Tensor, same: Tensor | None = None) -> Tensor:
    """CLIP's symmetric cross entropy over image-to-text `logits` [N, N] (pair i matches i).

    `same` [N, N] bool marks pairs whose captions are equal: those are positives too, with the
    target spread evenly over them (two images with one caption are not negatives of each other);
    None: the identity, CLIP's loss exactly.
    """
    n = logits.shape[0]
    if logits.shape != (n, n):
        raise ValueError(f"expected square logits [N, N], got {tuple(logits.shape)}")
    positives = torch.eye(n, dtype=torch.bool, device=logits.device) if same is None else same
    if positives.shape != (n, n) or not bool(positives.diagonal().all()):
        raise ValueError("`same` must be [N, N] with every pair matching itself")
    target = positives.to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True)
    image_loss = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_loss = -(target.t() * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return (image_loss + text_loss) / 2


def same_caption(captions: list[str]) -> Tensor:
    """[N, N] bool: captions i and j are the same text."""
    ids = {text: k for k, text in enumerate(dict.fromkeys(captions))}
    index = torch.tensor([ids[t] for t in captions])
    return index[:, None] == index[None, :]


__all__ = ["CLIPModel", "contrastive_loss", "same_caption"]
