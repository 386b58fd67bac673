import math

import pytest
import torch

from drivemtl.ops import gaussian_heatmaps, heatmap_argmax, heatmap_peaks


def test_gaussian_heatmap_values():
    points = torch.tensor([[[3.0, 2.0], [1.5, 4.0]]])  # one instance, two joints, (x, y)
    maps = gaussian_heatmaps(points, (6, 8), sigma=2.0, visible=torch.tensor([[True, False]]))
    assert maps.shape == (1, 2, 6, 8)
    assert maps[0, 0, 2, 3].item() == pytest.approx(1.0)
    # One pixel right and two down: d^2 = 5.
    assert maps[0, 0, 4, 4].item() == pytest.approx(math.exp(-5 / 8))
    assert maps[0, 1].abs().max().item() == 0.0  # invisible joint
    nan_point = gaussian_heatmaps(torch.tensor([[float("nan"), 1.0]]), (3, 3), 1.0)
    assert nan_point.abs().max().item() == 0.0


def test_argmax_decoding_recovers_subpixel_points():
    truth = torch.tensor([[5.3, 7.0], [10.0, 3.8], [0.0, 0.0]], dtype=torch.float64)
    maps = gaussian_heatmaps(truth, (16, 20), sigma=1.5)
    points, scores = heatmap_argmax(maps)
    # Quarter-pixel refinement towards the higher neighbour; no shift on a tie or at the border.
    assert points.tolist() == [[5.25, 7.0], [10.0, 3.75], [0.0, 0.0]]
    assert scores.shape == (3,)
    raw, _ = heatmap_argmax(maps, refine=False)
    assert raw.tolist() == [[5.0, 7.0], [10.0, 4.0], [0.0, 0.0]]


def test_heatmap_peaks_finds_local_maxima_in_score_order():
    heat = torch.zeros(2, 10, 10)
    heat[0, 2, 3] = 0.9
    heat[0, 2, 4] = 0.5  # neighbour of a stronger peak: suppressed
    heat[1, 7, 8] = 0.7
    points, scores, channels = heatmap_peaks(heat, k=2)
    assert points.tolist() == [[3.0, 2.0], [8.0, 7.0]]
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert channels.tolist() == [0, 1]
