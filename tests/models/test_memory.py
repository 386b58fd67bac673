"""Live-storage peak memory: hand-counted chains, branches, views, autograd, and meta == real."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drivemtl.models.memory import MemoryTracker, measure, meta_call, meta_twins

F32 = 4  # bytes


class Square(nn.Module):
    """x * x: under autograd the product keeps its input for the backward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def chain(square: bool = False) -> nn.Sequential:
    """conv 3->4 (3x3, pad 1), ReLU or x*x, conv 4->2 (1x1) [, x*x]: on 1x3x8x8 the maps are
    768 B (input), 1024 B (4 channels) and 512 B (2 channels)."""
    torch.manual_seed(0)
    if square:
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Square(), nn.Conv2d(4, 2, 1), Square())
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))


def run_on(net: nn.Module, device: str, grad: bool = False) -> MemoryTracker:
    """Measure `net` on a 1x3x8x8 input on `device` ("cpu" or "meta"), children labelled."""
    x = torch.zeros(1, 3, 8, 8, device=device)
    if device == "meta":
        twins = meta_twins(net)
        run = lambda: meta_call(net, twins, x)  # noqa: E731
    else:
        run = lambda: net(x)  # noqa: E731
    return measure(run, (x,), {m: name for name, m in net.named_children()}, grad=grad)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_chain_of_convs_peaks_at_the_largest_live_sum(device: str) -> None:
    tracker = run_on(chain(), device)
    # conv0: x + a = 768 + 1024; relu: x + a + b = 2816 (a is freed only once b exists);
    # conv2: x + b + c = 768 + 1024 + 512
    assert tracker.peak == 2816
    assert tracker.label_peak == {"0": 1792, "1": 2816, "2": 2304}
    assert tracker.label_own == {"0": 1024, "1": 1024, "2": 512}
    assert tracker.current == 0 and tracker.live == {}  # all freed once the run is over


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_autograd_keeps_what_the_backward_needs(device: str) -> None:
    net = chain(square=True)
    # no_grad: x, a, b live together (2816), then a goes; x * x saves nothing
    assert run_on(net, device).peak == 768 + 1024 + 1024
    # with autograd, a (saved by x*x), b (saved by the conv), c and d all stay live
    assert run_on(net, device, grad=True).peak == 768 + 1024 + 1024 + 512 + 512


def test_branches_views_and_in_place_results() -> None:
    x = torch.zeros(2, 8)  # 64 B

    def branches() -> torch.Tensor:
        a = x * 2  # 64
        b = x + 1  # 64
        view = a.view(16).t()  # same storage: not counted
        a.relu_()  # in place: not counted
        return (view.view(2, 8) + b).sum()  # 64, then a 4-byte scalar with a, b, sum live

    tracker = measure(branches, (x,))
    assert tracker.peak == 64 * 4 + 4


def test_an_attention_matrix_is_counted_with_its_softmax() -> None:
    """softmax(qᵀk) for 16 query and 32 key positions: logits and softmax (16 x 32 each, per
    image) are live together with q, k, v, then the attended values join them."""
    q, k, v = torch.zeros(2, 8, 16), torch.zeros(2, 8, 32), torch.zeros(2, 8, 32)

    def attention() -> torch.Tensor:
        logits = q.transpose(1, 2) @ k
        return v @ logits.softmax(-1).transpose(1, 2)

    inputs = (2 * 8 * 16 + 2 * 8 * 32 * 2) * F32
    matrices = 2 * (2 * 16 * 32) * F32
    output = 2 * 8 * 16 * F32
    assert measure(attention, (q, k, v)).peak == inputs + matrices + output


def test_meta_call_leaves_the_model_untouched() -> None:
    net = chain()
    before = {n: t.clone() for n, t in net.state_dict().items()}
    out = meta_call(net, meta_twins(net), torch.zeros(1, 3, 8, 8, device="meta"))
    assert out.device.type == "meta" and out.shape == (1, 2, 8, 8)
    for name, tensor in net.state_dict().items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, before[name])


def test_frees_after_the_pass_are_subtracted() -> None:
    tracker = MemoryTracker()
    with tracker:
        a = torch.zeros(10)  # 40
        b = torch.zeros(20)  # 80
        del a
        c = torch.zeros(5)  # 20
    assert tracker.peak == 120 and tracker.current == 100
    del b, c
    assert tracker.current == 0 and tracker.live == {}
