"""QDTrack's online tracker: quasi-dense embeddings matched to a tracklet memory by bi-softmax.

Per frame (detections sorted by score): duplicates are dropped (an earlier, higher-scoring box
overlaps by more than the same-class IoU 0.7, or the backdrop IoU 0.3 for a box below the object
score); the rest are matched to the memory (live tracklets and the last frame's backdrops) by
bi-softmax similarity (softmax over the memory + softmax over the detections, halved) of their
embeddings' dot products, masked to the same class. Greedily by score, a detection whose best
match beats the match score takes that tracklet's id (if it scores above the object score; the
tracklet is then taken) or, matched confidently to a tracklet it may not take, is suppressed;
unmatched detections above the init score start tracks, unmatched low-score ones become
backdrops. Tracklet embeddings follow their detections with momentum; tracklets unseen for the
tracklet memory and backdrops older than the backdrop memory are forgotten. The memory is a plain
object the caller keeps between frames (outside the network).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from drivemtl.ops.boxes import box_iou

SUPPRESSED = -2  # id of a detection suppressed as the duplicate of a tracked object
UNTRACKED = -1  # id of a detection that neither continues nor starts a track


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds and memory lengths (defaults: the QDTrack reference implementation's)."""

    init_score: float = 0.7
    object_score: float = 0.3
    match_score: float = 0.5
    tracklet_frames: int = 10
    backdrop_frames: int = 1
    momentum: float = 0.8  # weight of the new embedding in a tracklet's update
    backdrop_iou: float = 0.3
    class_iou: float = 0.7
    suppress_confidence: float = 0.5
    same_class: bool = True


@dataclass
class Tracklet:
    """One live track: its last box, class, embedding and the frame it was last seen in."""

    box: Tensor
    label: int
    embedding: Tensor
    last_frame: int


@dataclass
class TrackerMemory:
    """What the tracker remembers about one video."""

    tracklets: dict[int, Tracklet] = field(default_factory=dict)
    backdrops: list[tuple[Tensor, Tensor, Tensor]] = field(
        default_factory=list
    )  # boxes, labels, embeds
    next_id: int = 0

    def entries(self) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """(boxes, labels, embeddings, ids) of tracklets then backdrops (id -1), or None."""
        parts = []
        if self.tracklets:
            ids = list(self.tracklets)
            t = [self.tracklets[i] for i in ids]
            parts.append((torch.stack([x.box for x in t]), torch.tensor([x.label for x in t]),
                          torch.stack([x.embedding for x in t]), torch.tensor(ids)))  # fmt: skip
        for boxes, labels, embeds in self.backdrops:
            if len(boxes):
                parts.append((boxes, labels, embeds, torch.full((len(boxes),), UNTRACKED)))
        if not parts:
            return None
        return tuple(torch.cat([p[k] for p in parts]) for k in range(4))  # type: ignore[return-value]


def _duplicates(boxes: Tensor, scores: Tensor, labels: Tensor, config: TrackerConfig) -> Tensor:
    """[N] True for boxes (sorted by score) that overlap an earlier one too much."""
    n = len(boxes)
    if n < 2:
        return torch.zeros(n, dtype=torch.bool)
    ious = box_iou(boxes, boxes)
    if config.same_class:
        ious = ious * (labels[:, None] == labels[None, :])
    threshold = torch.where(scores < config.object_score, config.backdrop_iou, config.class_iou)
    earlier = torch.ones(n, n, dtype=torch.bool).tril(-1)
    return ((ious > threshold[:, None]) & earlier).any(dim=1)


def bisoftmax(embeds: Tensor, memory: Tensor) -> Tensor:
    """[N, M] (softmax over the memory + softmax over the detections) / 2 of the dot products."""
    similarity = embeds @ memory.T
    return (similarity.softmax(dim=1) + similarity.softmax(dim=0)) / 2


def _assign(
    scores: np.ndarray, det_scores: np.ndarray, memory_ids: np.ndarray, config: TrackerConfig
) -> np.ndarray:
    """Greedy matching by detection order; returns ids (UNTRACKED / SUPPRESSED / track id)."""
    ids = np.full(len(scores), UNTRACKED, dtype=np.int64)
    for i in range(len(scores)):
        j = int(scores[i].argmax())
        confidence, track = scores[i, j], int(memory_ids[j])
        if confidence <= config.match_score or track < 0:
            continue
        if det_scores[i] > config.object_score:
            ids[i] = track
            scores[i + 1 :, j] = 0.0  # the tracklet is taken
        elif confidence > config.suppress_confidence:
            ids[i] = SUPPRESSED
    return ids


class QuasiDenseTracker:
    """Stateless rules over a `TrackerMemory` (see the module docstring)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()

    def update(
        self,
        memory: TrackerMemory,
        boxes: Tensor,
        scores: Tensor,
        labels: Tensor,
        embeds: Tensor,
        frame: int,
    ) -> Tensor:
        """Track ids [N] of one frame's detections (boxes [N, 4], scores [N], labels [N],
        embeds [N, D]); UNTRACKED for those that are not tracks, SUPPRESSED for removed
        duplicates. Updates `memory` in place."""
        cfg = self.config
        order = torch.sort(scores.detach().cpu(), descending=True, stable=True).indices
        boxes, scores, labels, embeds = (
            t.detach().cpu()[order] for t in (boxes, scores, labels, embeds)
        )
        labels = labels.long()
        ids = torch.full((len(boxes),), SUPPRESSED, dtype=torch.long)
        keep = torch.nonzero(~_duplicates(boxes, scores, labels, cfg)).squeeze(1)
        kept_ids = torch.full((len(keep),), UNTRACKED, dtype=torch.long)
        entries = memory.entries()
        if entries is not None and len(keep):
            _, m_labels, m_embeds, m_ids = entries
            match = bisoftmax(embeds[keep].float(), m_embeds.float())
            if cfg.same_class:
                match = match * (labels[keep][:, None] == m_labels[None, :])
            assigned = _assign(
                match.double().numpy(), scores[keep].double().numpy(), m_ids.numpy(), cfg
            )
            kept_ids = torch.from_numpy(assigned)
        new = (kept_ids == UNTRACKED) & (scores[keep] > cfg.init_score)
        count = int(new.sum())
        kept_ids[new] = torch.arange(memory.next_id, memory.next_id + count)
        memory.next_id += count
        ids[keep] = kept_ids
        self._remember(memory, boxes[keep], labels[keep], embeds[keep], kept_ids, frame)
        out = torch.empty_like(ids)
        out[order] = ids
        return out

    def _remember(
        self, memory: TrackerMemory, boxes: Tensor, labels: Tensor, embeds: Tensor, ids: Tensor,
        frame: int,
    ) -> None:  # fmt: skip
        """Update tracklets, add this frame's backdrops, forget stale entries (inputs: the
        non-duplicate detections sorted by score, so "earlier" means higher-scoring)."""
        cfg = self.config
        for i in torch.nonzero(ids >= 0).squeeze(1).tolist():
            track, embed = int(ids[i]), embeds[i].float()
            old = memory.tracklets.get(track)
            if old is not None:
                embed = (1 - cfg.momentum) * old.embedding + cfg.momentum * embed
            memory.tracklets[track] = Tracklet(boxes[i], int(labels[i]), embed, frame)
        backdrop = torch.nonzero(ids == UNTRACKED).squeeze(1)
        if len(backdrop):
            overlap = box_iou(boxes[backdrop], boxes) > cfg.backdrop_iou
            earlier = torch.arange(len(boxes))[None, :] < backdrop[:, None]
            backdrop = backdrop[~(overlap & earlier).any(dim=1)]
        memory.backdrops.insert(0, (boxes[backdrop], labels[backdrop], embeds[backdrop].float()))
        del memory.backdrops[cfg.backdrop_frames :]
        stale = [
            t for t, x in memory.tracklets.items() if frame - x.last_frame >= cfg.tracklet_frames
        ]
        for track in stale:
            del memory.tracklets[track]
