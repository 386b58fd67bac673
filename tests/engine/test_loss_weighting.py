"""Loss weighting strategies against hand-computed values (float64 references)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from drivemtl.engine.gradient_balancing import GradNorm, MGDARepresentation, PCGrad
from drivemtl.engine.loss_weighting import (
    LOSS_WEIGHTINGS,
    DynamicWeightAverage,
    FixedWeighting,
    UncertaintyWeighting,
    build_loss_weighting,
)


def t(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def test_fixed_weighted_sum() -> None:
    w = FixedWeighting(["detection", "semantic"], {"detection": 1.0, "semantic": 0.7})
    out = w({"detection": t(2.0), "semantic": t(3.0)})
    assert out.total.item() == pytest.approx(2.0 + 0.7 * 3.0)
    assert out.weights == {"detection": 1.0, "semantic": 0.7}


def test_fixed_rejects_unknown_task_loss() -> None:
    w = FixedWeighting(["semantic"], {"semantic": 1.0})
    with pytest.raises(KeyError, match="depth"):
        w({"depth": t(1.0)})


def test_uncertainty_value_and_gradient() -> None:
    w = UncertaintyWeighting(["a", "b"], init_log_variance=0.5)
    la, lb = t(2.0), t(3.0)
    out = w({"a": la, "b": lb}, present={"a": True, "b": False})
    # only task a is labelled in this batch: exp(-0.5) * 2 + 0.5
    assert out.total.item() == pytest.approx(math.exp(-0.5) * 2.0 + 0.5, rel=1e-6)
    out.total.backward()
    grad = w.log_variance.grad
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L; the absent task's s gets no gradient
    assert float(grad[0]) == pytest.approx(1 - math.exp(-0.5) * 2.0, rel=1e-6)
    assert float(grad[1]) == 0.0
    assert out.weights["a"] == pytest.approx(math.exp(-0.5))


def test_dwa_weights_follow_loss_ratios() -> None:
    w = DynamicWeightAverage(["a", "b"], window=2, temperature=2.0)
    w.train()
    # window 1: a = 4, b = 2; window 2: a = 2 (halved), b = 2 (flat)
    for la, lb in [(4.0, 2.0), (4.0, 2.0), (2.0, 2.0), (2.0, 2.0)]:
        out = w({"a": t(la), "b": t(lb)})
        assert out.weights == {"a": 1.0, "b": 1.0}
    ra, rb = 2.0 / 4.0, 2.0 / 2.0
    ea, eb = math.exp(ra / 2.0), math.exp(rb / 2.0)
    expected = {"a": 2 * ea / (ea + eb), "b": 2 * eb / (ea + eb)}
    out = w({"a": t(1.0), "b": t(1.0)})
    assert out.weights == pytest.approx(expected)
    assert out.total.item() == pytest.approx(expected["a"] * 1.0 + expected["b"] * 1.0)


def test_dwa_means_count_only_labelled_steps_and_state_round_trips() -> None:
    w = DynamicWeightAverage(["a", "b"], window=2)
    w.train()
    w({"a": t(3.0), "b": t(0.0)}, present={"a": True, "b": False})
    w({"a": t(1.0), "b": t(5.0)}, present={"a": True, "b": True})
    assert w.history[1].tolist() == [2.0, 5.0]
    clone = DynamicWeightAverage(["a", "b"], window=2)
    clone.load_state_dict(w.state_dict())
    assert torch.equal(clone.history, w.history) and int(clone.windows_done) == 1


def test_build_from_config_uses_model_defaults() -> None:
    cfg = {"type": "fixed", "weights": {"semantic": 0.7}}
    w = build_loss_weighting(cfg, ["detection", "semantic"], {"detection": 2.0}, steps_per_epoch=5)
    assert isinstance(w, FixedWeighting)
    assert w.weights == {"detection": 2.0, "semantic": 0.7}
    dwa = build_loss_weighting({"type": "dwa"}, ["a"], {}, steps_per_epoch=5)
    assert isinstance(dwa, DynamicWeightAverage) and dwa.window == 5
    with pytest.raises(KeyError, match="does not train"):
        build_loss_weighting({"type": "fixed", "weights": {"pose": 1.0}}, ["a"], {}, 1)


def test_existing_strategies_keep_the_plain_backward_path() -> None:
    model = nn.Linear(2, 1)
    for w in (
        FixedWeighting(["a"], {"a": 1.0}),
        UncertaintyWeighting(["a"]),
        DynamicWeightAverage(["a"], window=1),
    ):
        before = {k: v.clone() for k, v in w.state_dict().items()}
        w.bind(model)  # the default hook looks at nothing and changes nothing
        assert not w.needs_task_gradients and w.shared_names == frozenset()
        assert all(torch.equal(before[k], v) for k, v in w.state_dict().items())
        with pytest.raises(NotImplementedError, match="does not combine task gradients"):
            w.combine_gradients({"a": t(1.0)}, None, [], [])


def test_gradient_methods_are_registered_and_built_from_config() -> None:
    assert {"gradnorm", "pcgrad", "mgda_ub"} <= set(LOSS_WEIGHTINGS.names())
    built = {
        kind: build_loss_weighting({"type": kind}, ["a", "b"], {"a": 2.0}, steps_per_epoch=5)
        for kind in ("gradnorm", "pcgrad", "mgda_ub")
    }
    assert isinstance(built["gradnorm"], GradNorm) and not built["gradnorm"].needs_task_gradients
    # GradNorm starts from the static weights (2, 1) scaled to sum to the task count
    assert built["gradnorm"].task_weights.tolist() == pytest.approx([4 / 3, 2 / 3])
    assert isinstance(built["pcgrad"], PCGrad) and built["pcgrad"].needs_task_gradients
    assert isinstance(built["mgda_ub"], MGDARepresentation)
    parameters = build_loss_weighting({"type": "mgda_ub", "gradients": "parameters"}, ["a"], {}, 1)
    assert parameters.needs_task_gradients
