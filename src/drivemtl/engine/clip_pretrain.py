"""Contrastive pretraining of a small CLIP on captioned frames, written as an OpenAI-format checkpoint.

LV-Adapter starts every variant from CLIP's weights. Without OpenAI's files (or to test on the
synthetic world at CPU size) a CLIP-shaped model is trained here: the image set's frames with
captions made from their labels (`drivemtl.data.captions`), a BPE vocabulary learned from those
captions and the class names (`learn_merges`), CLIP's symmetric contrastive loss (equal captions
count as positives), AdamW with warm-up and cosine decay, horizontal flips (a flip changes no
caption). Writes `clip.pt` (OpenAI key names), `vocab.txt.gz` and `clip_pretrain.json`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from drivemtl.data import build_dataset, build_transforms
from drivemtl.data.captions import caption
from drivemtl.data.categories import get_categories
from drivemtl.data.config import DataConfig
from drivemtl.models.backbones.clip_resnet import ModifiedResNet
from drivemtl.models.language.clip_text import CLIPTextEncoder
from drivemtl.models.language.contrastive import CLIPModel, contrastive_loss, same_caption
from drivemtl.models.language.tokenizer import CLIPTokenizer, learn_merges, write_vocabulary
from drivemtl.structures.bdd import DETECTION_CLASSES_10, DRIVABLE_CLASSES, SEMANTIC_CLASSES

WEIGHTS_FILE = "clip.pt"
VOCAB_FILE = "vocab.txt.gz"
CARD_FILE = "clip_pretrain.json"


@dataclass(frozen=True)
class CLIPPretrainOptions:
    """Architecture and schedule; the defaults are a CPU-sized CLIP (ModifiedResNet with one
    block per stage, width 16; a 2-layer text transformer of width 64)."""

    layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    width: int = 16
    embed_dim: int = 128
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 1
    context_length: int = 77
    steps: int = 300
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 30
    seed: int = 0


@dataclass
class CLIPPretrainResult:
    """What `pretrain_clip` wrote and measured."""

    weights: Path
    vocabulary: Path
    losses: list[float] = field(default_factory=list)
    retrieval_top1: float = math.nan  # held-out image -> caption top-1 among distinct captions
    retrieval_chance: float = math.nan  # 1 / distinct held-out captions


def captioned_frames(data: DataConfig, split: str) -> tuple[list[Tensor], list[str]]:
    """Every frame of `split` resized and normalised as for evaluation, with its caption."""
    dataset = build_dataset(data, split, transform=build_transforms(data.transforms, train=False))
    images, captions = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        set_cfg = data.sets[sample.meta.image_set]
        images.append(sample.image)
        captions.append(caption(sample, get_categories(set_cfg.categories).classes))
    if not images:
        raise ValueError(f"no frames in split {split!r} of the data config to pretrain on")
    return images, captions


def stack_images(images: Sequence[Tensor], divisor: int = 32) -> Tensor:
    """[N, 3, H, W]: images zero-padded (bottom / right) to a common size divisible by `divisor`."""
    height = max(int(i.shape[1]) for i in images)
    width = max(int(i.shape[2]) for i in images)
    height, width = (math.ceil(v / divisor) * divisor for v in (height, width))
    return torch.stack([F.pad(i, (0, width - i.shape[2], 0, height - i.shape[1])) for i in images])


def build_clip(options: CLIPPretrainOptions, vocab_size: int) -> CLIPModel:
    """A randomly initialised CLIP of `options`' shape."""
    visual = ModifiedResNet(
        options.layers, options.width, options.embed_dim, heads=max(1, options.width * 32 // 64)
    )
    text = CLIPTextEncoder.build(
        options.text_width, options.text_layers, options.text_heads, options.context_length,
        vocab_size, options.embed_dim,
    )  # fmt: skip
    return CLIPModel(visual, text)


def lr_factor(step: int, options: CLIPPretrainOptions) -> float:
    """Linear warm-up, then cosine decay to 0 over the remaining steps."""
    if step < options.warmup_steps:
        return (step + 1) / options.warmup_steps
    rest = max(1, options.steps - options.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * (step - options.warmup_steps) / rest))


@torch.no_grad()
def retrieval_top1(model: CLIPModel, tokenizer: CLIPTokenizer, images: list[Tensor],
                   captions: list[str], batch_size: int = 64) -> float:  # fmt: skip
    """Fraction of images whose most similar caption, among the distinct ones, is their own."""
    model.eval()
    distinct = list(dict.fromkeys(captions))
    text = model.encode_text(tokenizer.tokenize(distinct, model.text.context_length))
    hits = 0
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        best = (model.encode_image(stack_images(chunk)) @ text.t()).argmax(dim=1)
        hits += sum(distinct[int(b)] == c for b, c in zip(best, captions[start:], strict=False))
    return hits / len(images)


def _train(model: CLIPModel, tokenizer: CLIPTokenizer, images: list[Tensor],
           captions: list[str], options: CLIPPretrainOptions) -> list[float]:  # fmt: skip
    """The contrastive training loop; returns the loss of every step."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay},
         {"params": rest, "weight_decay": 0.0}], lr=options.lr,
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, options))
    rng = random.Random(options.seed)
    tokens = tokenizer.tokenize(captions, options.context_length)
    order: list[int] = []
    losses = []
    model.train()
    for _ in range(options.steps):
        if len(order) < options.batch_size:
            order += rng.sample(range(len(images)), len(images))
        picks, order = order[: options.batch_size], order[options.batch_size :]
        batch = stack_images([images[i].flip(-1) if rng.random() < 0.5 else images[i]
                              for i in picks])  # fmt: skip
        logits = model(batch, tokens[picks])
        loss = contrastive_loss(logits, same_caption([captions[i] for i in picks]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def pretrain_clip(
    data: DataConfig,
    out_dir: Path,
    options: CLIPPretrainOptions | None = None,
    extra_words: Sequence[str] = (*SEMANTIC_CLASSES, *DRIVABLE_CLASSES, *DETECTION_CLASSES_10),
    val_split: str | None = "val",
) -> CLIPPretrainResult:
    """Pretrain on the `train` split's captioned frames, score retrieval on `val_split` (None:
    not scored), write the checkpoint, vocabulary and card into `out_dir`. `extra_words` (the
    class names to be prompted later) join the captions when the vocabulary is learned."""
    options = options or CLIPPretrainOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, captions = captioned_frames(data, "train")
    vocabulary = write_vocabulary(out_dir / VOCAB_FILE, learn_merges([*captions, *extra_words]))
    tokenizer = CLIPTokenizer(vocabulary)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        model = build_clip(options, tokenizer.vocab_size)
        losses = _train(model, tokenizer, images, captions, options)
    result = CLIPPretrainResult(out_dir / WEIGHTS_FILE, vocabulary, losses)
    if val_split is not None:
        val_images, val_captions = captioned_frames(data, val_split)
        result.retrieval_top1 = retrieval_top1(model, tokenizer, val_images, val_captions)
        result.retrieval_chance = 1 / len(set(val_captions))
    torch.save(model.openai_state_dict(), result.weights)
    card = {"options": asdict(options), "train_frames": len(images),
            "distinct_captions": len(set(captions)), "examples": captions[:5],
            "first_loss": losses[0], "last_loss": losses[-1],
            "retrieval_top1": result.retrieval_top1, "retrieval_chance": result.retrieval_chance}  # fmt: skip
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2), encoding="utf-8")
    return result


__all__ = [
    "CLIPPretrainOptions",
    "CLIPPretrainResult",
    "build_clip",
    "captioned_frames",
    "pretrain_clip",
    "retrieval_top1",
    "stack_images",
]
