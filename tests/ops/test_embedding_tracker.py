"""QDTrack tracker rules on hand-made sequences: occlusion within / beyond the memory, duplicate
suppression, class separation, backdrops, momentum, and bi-softmax against a formula."""

from __future__ import annotations

import torch

from drivemtl.ops.embedding_tracker import (
    SUPPRESSED,
    UNTRACKED,
    QuasiDenseTracker,
    TrackerConfig,
    TrackerMemory,
    bisoftmax,
)

EMBED = {"a": torch.tensor([8.0, 0.0, 0.0]), "b": torch.tensor([0.0, 8.0, 0.0]),
         "c": torch.tensor([0.0, 0.0, 8.0])}  # fmt: skip
BOX = {"a": [0.0, 0.0, 10.0, 10.0], "b": [50.0, 0.0, 60.0, 10.0], "c": [0.0, 50.0, 10.0, 60.0]}


def frame(*objects: tuple[str, float, int]):
    """Detections of (identity, score, class): boxes and embeddings by identity."""
    boxes = torch.tensor([BOX[o] for o, _, _ in objects]).reshape(-1, 4)
    scores = torch.tensor([s for _, s, _ in objects])
    labels = torch.tensor([c for _, _, c in objects], dtype=torch.long)
    embeds = torch.stack([EMBED[o] for o, _, _ in objects]) if objects else torch.zeros(0, 3)
    return boxes, scores, labels, embeds


def run(tracker, memory, frames):
    return [tracker.update(memory, *f, frame=t).tolist() for t, f in enumerate(frames)]


def test_ids_persist_and_new_objects_get_new_ids() -> None:
    tracker, memory = QuasiDenseTracker(), TrackerMemory()
    ids = run(tracker, memory, [frame(("a", 0.9, 2)), frame(("b", 0.9, 2), ("a", 0.8, 2))])
    assert ids == [[0], [1, 0]]


def test_occlusion_shorter_than_the_memory_keeps_the_id_longer_gets_a_new_one() -> None:
    memory_frames = TrackerConfig().tracklet_frames  # 10
    for gap, expected in ((memory_frames - 1, 0), (memory_frames, 1)):
        tracker, memory = QuasiDenseTracker(), TrackerMemory()
        frames = [frame(("a", 0.9, 2))] + [frame()] * gap + [frame(("a", 0.9, 2))]
        assert run(tracker, memory, frames)[-1] == [expected], gap


def test_a_low_score_duplicate_is_suppressed_and_a_low_score_object_does_not_start_a_track() -> (
    None
):
    tracker, memory = QuasiDenseTracker(), TrackerMemory()
    tracker.update(memory, *frame(("a", 0.9, 2)), frame=0)
    boxes, scores, labels, embeds = frame(("a", 0.9, 2), ("a", 0.2, 2), ("c", 0.5, 2))
    boxes[1] = torch.tensor([0.0, 0.0, 10.0, 5.0])  # IoU 0.5 > 0.3, the backdrop IoU of low scores
    ids = tracker.update(memory, boxes, scores, labels, embeds, frame=1).tolist()
    # a keeps id 0, its low-score copy is a duplicate; c (0.5 < init 0.7, unmatched) is a
    # backdrop, not a track
    assert ids == [0, SUPPRESSED, UNTRACKED]
    assert len(memory.backdrops) == 1 and len(memory.backdrops[0][0]) == 1


def test_a_low_score_detection_of_a_live_track_is_suppressed_not_a_backdrop() -> None:
    tracker, memory = QuasiDenseTracker(), TrackerMemory()
    tracker.update(memory, *frame(("a", 0.9, 2)), frame=0)
    ids = tracker.update(memory, *frame(("a", 0.2, 2)), frame=1).tolist()
    assert ids == [SUPPRESSED]  # matched with confidence > 0.5 but below the object score 0.3
    assert len(memory.backdrops[0][0]) == 0 and memory.tracklets[0].last_frame == 0


def test_an_overlapping_lower_scoring_box_of_the_same_class_is_a_duplicate() -> None:
    tracker, memory = QuasiDenseTracker(), TrackerMemory()
    boxes, scores, labels, embeds = frame(("a", 0.9, 2), ("b", 0.8, 2), ("b", 0.85, 3))
    boxes[1] = torch.tensor([0.0, 0.0, 10.0, 9.0])  # IoU 0.9 with a, same class
    boxes[2] = torch.tensor([0.0, 0.0, 10.0, 9.5])  # IoU 0.95 with a, other class: kept
    ids = tracker.update(memory, boxes, scores, labels, embeds, frame=0).tolist()
    assert ids == [0, SUPPRESSED, 1]


def test_classes_never_match_across() -> None:
    tracker, memory = QuasiDenseTracker(), TrackerMemory()
    ids = run(tracker, memory, [frame(("a", 0.9, 2)), frame(("a", 0.9, 0))])
    assert ids == [[0], [1]]  # same embedding, other class: a new track


def test_embeddings_follow_with_momentum_and_stale_tracks_are_forgotten() -> None:
    tracker, memory = QuasiDenseTracker(TrackerConfig(tracklet_frames=2)), TrackerMemory()
    boxes, scores, labels, _ = frame(("a", 0.9, 2))
    tracker.update(memory, boxes, scores, labels, torch.tensor([[8.0, 0.0, 0.0]]), frame=0)
    tracker.update(memory, boxes, scores, labels, torch.tensor([[8.0, 2.0, 0.0]]), frame=1)
    expected = 0.2 * torch.tensor([8.0, 0.0, 0.0]) + 0.8 * torch.tensor([8.0, 2.0, 0.0])
    torch.testing.assert_close(memory.tracklets[0].embedding, expected)
    tracker.update(memory, *frame(), frame=2)
    assert 0 in memory.tracklets
    tracker.update(memory, *frame(), frame=3)
    assert memory.tracklets == {}


def test_bisoftmax_is_the_mean_of_the_two_softmaxes() -> None:
    torch.manual_seed(0)
    det, mem = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    s = det @ mem.T
    for i in range(3):
        for j in range(5):
            row = torch.exp(s[i, j]) / torch.exp(s[i]).sum()
            col = torch.exp(s[i, j]) / torch.exp(s[:, j]).sum()
            assert abs(float(bisoftmax(det, mem)[i, j]) - float((row + col) / 2)) < 1e-12


def test_ids_come_back_in_the_input_order() -> None:
    tracker, memory = QuasiDenseTracker(), TrackerMemory()
    tracker.update(memory, *frame(("a", 0.9, 2), ("b", 0.8, 2)), frame=0)
    ids = tracker.update(memory, *frame(("b", 0.75, 2), ("a", 0.95, 2)), frame=1).tolist()
    assert ids == [1, 0]
