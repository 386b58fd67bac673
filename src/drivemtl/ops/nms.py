"""Greedy non-maximum suppression, exact, in pure PyTorch (torchvision kernels when available).

Neither strategy builds an N x N IoU matrix. Boxes are sorted by score (ranks) and, along x or y,
by their low edge; a pair can only have IoU > t if its overlap along that axis exceeds
``t * max(extents)``, which bounds every box's partners to a contiguous window of the sorted
order (found with ``searchsorted``). Then, by the number of candidate pairs:

* few candidates - *sweep*: IoU of every candidate pair in bounded chunks, keep pairs above the
  threshold as "suppresses" edges, then one greedy pass in score order;
* many candidates - *kept windows*: resolve score-ordered blocks greedily (small dense IoU), and
  let only the boxes that were kept test their windows against later boxes.

Both equal the textbook one-box-at-a-time loop: a box is suppressed when its IoU with a kept box
is strictly greater than the threshold (torchvision's rule); equal scores keep the lower index
first. Class-aware NMS shifts each category along the sweep axis so categories never pair up.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from drivemtl.ops._dispatch import use_torchvision
from drivemtl.ops.boxes import box_iou

_PAIR_CHUNK = 1 << 20  # candidate pairs evaluated at once (bounds memory to tens of MB)
_SWEEP_PAIRS_PER_BOX = 128  # above this many candidates per box, the kept-windows strategy wins
_BLOCK = 256  # score-ordered block size of the kept-windows strategy
_SLACK = 1e-5  # relative widening of the windows: rounding can never drop a true pair


def _check_inputs(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms: boxes must be [N, 4], got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: scores must be [N] matching boxes, got {tuple(scores.shape)}")
    if not iou_threshold >= 0:
        raise ValueError(f"nms: iou_threshold must be >= 0, got {iou_threshold}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("nms: boxes contain NaN or infinite coordinates")


class _Windows:
    """Per box (score rank r): candidate partners sit at positions ``[begin[r], end[r])`` of
    ``by_axis`` (ranks sorted by low edge); ``position[r]`` is box r's own position there.

    Derivation (t = threshold): IoU > t needs inter > t * area_r and inter <= overlap * height_r,
    so overlap > t * extent_r: partners start before ``hi_r - t * extent_r``; symmetrically a
    partner q starting earlier needs extent_q < extent_r / t, so it starts after
    ``lo_r - (1 - t) / t * extent_r`` (and never before ``lo_r - max extent``).
    """

    def __init__(self, boxes: Tensor, iou_threshold: float, groups: Tensor | None) -> None:
        coords = boxes.double()
        shift = torch.zeros(boxes.shape[0], dtype=torch.float64)
        if groups is not None:
            # Shift each group past the whole extent: no window spans two groups (exact in fp64).
            span = float((coords.max() - coords.min()).clamp(min=0).ceil()) + 1.0
            shift = torch.unique(groups, return_inverse=True)[1].double() * span
        t = iou_threshold * (1 - _SLACK)
        best: tuple[int, Tensor, Tensor, Tensor, Tensor] | None = None
        for axis in (0, 1):  # sweep along the axis that yields fewer candidate pairs
            lo = coords[:, axis] + shift
            hi = coords[:, axis + 2] + shift
            extent = (hi - lo).clamp(min=0)
            by_axis = torch.argsort(lo, stable=True)
            starts = lo[by_axis]
            max_extent = float(extent.max())
            if t > 0:
                back = torch.clamp((1 - t) / t * extent, max=max_extent)
            else:
                back = torch.full_like(extent, max_extent)
            begin = torch.searchsorted(starts, lo - back * (1 + _SLACK), side="right")
            end = torch.searchsorted(starts, hi - t * extent, side="left")
            position = torch.empty_like(by_axis)
            position[by_axis] = torch.arange(by_axis.shape[0])
            forward_pairs = int((end - position - 1).clamp(min=0).sum())
            if best is None or forward_pairs < best[0]:
                best = (forward_pairs, by_axis, begin, end, position)
        assert best is not None
        self.forward_pairs, self.by_axis, self.begin, self.end, self.position = best


def _iou_above(boxes: Tensor, src: Tensor, dst: Tensor, iou_threshold: float) -> Tensor:
    """Boolean mask: IoU(boxes[src], boxes[dst]) > threshold, pairwise along the index vectors."""
    a = boxes.index_select(0, src)
    b = boxes.index_select(0, dst)
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_(min=0)
    inter = w.mul_(h)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter) > iou_threshold


def _expand(ranks: Tensor, first: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """For each rank r, positions ``first[r] .. first[r] + counts[r] - 1``: (src ranks, positions)."""
    total = int(counts.sum())
    src = torch.repeat_interleave(ranks, counts)
    offsets = torch.cumsum(counts, 0) - counts
    positions = torch.repeat_interleave(first - offsets, counts) + torch.arange(total)
    return src, positions


def _sweep(boxes: Tensor, iou_threshold: float, windows: _Windows) -> list[int]:
    """All candidate pairs (each once, forward in sorted order) -> edges -> one greedy pass."""
    n = boxes.shape[0]
    first = windows.position + 1
    counts = (windows.end - first).clamp(min=0)
    cumulative = torch.cumsum(counts, 0).numpy()
    sources: list[Tensor] = []
    targets: list[Tensor] = []
    start, done = 0, 0
    while start < n:
        stop = int(np.searchsorted(cumulative, done + _PAIR_CHUNK, side="right"))
        stop = min(max(stop, start + 1), n)
        ranks = torch.arange(start, stop)
        src, positions = _expand(ranks, first[start:stop], counts[start:stop])
        dst = windows.by_axis.index_select(0, positions)
        over = _iou_above(boxes, src, dst, iou_threshold)
        src, dst = src[over], dst[over]
        sources.append(torch.minimum(src, dst))
        targets.append(torch.maximum(src, dst))
        done = int(cumulative[stop - 1])
        start = stop
    source = torch.cat(sources).numpy() if sources else np.zeros(0, dtype=np.int64)
    target = torch.cat(targets).numpy() if targets else np.zeros(0, dtype=np.int64)
    target = target[np.argsort(source, kind="stable")]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(source, minlength=n), out=indptr[1:])
    removed = np.zeros(n, dtype=bool)
    kept: list[int] = []
    for i in range(n):
        if removed[i]:
            continue
        kept.append(i)
        if indptr[i + 1] > indptr[i]:
            removed[target[indptr[i] : indptr[i + 1]]] = True
    return kept


def _kept_windows(
    boxes: Tensor, iou_threshold: float, windows: _Windows, groups: Tensor | None
) -> list[int]:
    """Score-ordered blocks: greedy inside a block, then its kept boxes suppress later boxes."""
    n = boxes.shape[0]
    removed = np.zeros(n, dtype=bool)
    removed_view = torch.from_numpy(removed)  # shares memory: updates are visible to both
    counts_all = (windows.end - windows.begin).clamp(min=0)
    kept: list[int] = []
    for block_start in range(0, n, _BLOCK):
        block_stop = min(block_start + _BLOCK, n)
        alive = block_start + np.flatnonzero(~removed[block_start:block_stop])
        if alive.size == 0:
            continue
        alive_t = torch.from_numpy(alive)
        block = boxes.index_select(0, alive_t)
        overlaps = box_iou(block, block) > iou_threshold
        if groups is not None:
            labels = groups.index_select(0, alive_t)
            overlaps &= labels[:, None] == labels[None, :]
        overlaps_np = overlaps.numpy()
        suppressed = np.zeros(alive.size, dtype=bool)
        block_kept: list[int] = []
        for i in range(alive.size):
            if suppressed[i]:
                continue
            block_kept.append(i)
            suppressed[i + 1 :] |= overlaps_np[i, i + 1 :]
        winners = alive[block_kept]
        kept.extend(winners.tolist())
        if block_stop == n:
            break
        ranks = torch.from_numpy(winners)
        src, positions = _expand(ranks, windows.begin[ranks], counts_all[ranks])
        dst = windows.by_axis.index_select(0, positions)
        later = torch.nonzero((dst >= block_stop) & ~removed_view.index_select(0, dst)).squeeze(1)
        src, dst = src.index_select(0, later), dst.index_select(0, later)
        removed[dst[_iou_above(boxes, src, dst, iou_threshold)].numpy()] = True
    return kept


def _greedy_nms_sorted(boxes: Tensor, iou_threshold: float, groups: Tensor | None = None) -> Tensor:
    """Greedy NMS over boxes sorted by descending score; returns kept positions (ascending)."""
    device = boxes.device
    boxes = boxes.detach().cpu()
    groups = None if groups is None else groups.cpu()
    windows = _Windows(boxes, iou_threshold, groups)
    if windows.forward_pairs <= _SWEEP_PAIRS_PER_BOX * boxes.shape[0]:
        kept = _sweep(boxes, iou_threshold, windows)
    else:
        kept = _kept_windows(boxes, iou_threshold, windows, groups)
    return torch.as_tensor(kept, dtype=torch.long, device=device)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, impl: str = "auto") -> Tensor:
    """Indices of boxes kept by greedy NMS, sorted by descending score.

    ``boxes [N, 4]`` in (x1, y1, x2, y2), ``scores [N]``. ``impl``: "auto" uses torchvision's kernel
    when it imports, "torch" forces the pure implementation.
    """
    _check_inputs(boxes, scores, iou_threshold)
    tv_ops = use_torchvision(impl)
    if tv_ops is not None:
        return tv_ops.nms(boxes, scores, float(iou_threshold))
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    with torch.no_grad():
        kept = _greedy_nms_sorted(boxes[order], float(iou_threshold))
    return order[kept]


def batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, impl: str = "auto"
) -> Tensor:
    """Class-aware NMS: boxes only suppress boxes with the same ``idxs`` (e.g. class or image id).

    Returns kept indices sorted by descending score.
    """
    _check_inputs(boxes, scores, iou_threshold)
    if idxs.shape != scores.shape:
        raise ValueError(f"batched_nms: idxs must be [N] matching boxes, got {tuple(idxs.shape)}")
    tv_ops = use_torchvision(impl)
    if tv_ops is not None:
        return tv_ops.batched_nms(boxes, scores, idxs, float(iou_threshold))
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    with torch.no_grad():
        kept = _greedy_nms_sorted(boxes[order], float(iou_threshold), idxs[order])
    return order[kept]
