"""The adversarial training step against a step written out by hand, and exact resume.

The hand-written step follows DenseMTL's supplement (eqs. 7-9) with plain SGD: the network moves
along the gradient of  L_sup(source) + lambda * BCE(D(Q(target)), 1)  with D fixed, and D along
the gradient of  BCE(D(Q(source)), 1) + BCE(D(Q(target)), 0)  on the maps of the same forward
passes, Q = -p log p of the semantic softmax at input size.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from engine_fixtures import KillAt, SimulatedKill, make_config, same_weights

from drivemtl.engine.adversarial import AdaptationError
from drivemtl.engine.adversarial_module import bce_to, domain_maps
from drivemtl.engine.trainer import run_recipe

LR, LR_D, LAMBDA = 0.05, 0.1, 0.5


def _stage(steps: int, sgd: bool = True) -> dict[str, Any]:
    optimizer = {"type": "sgd", "lr": LR, "momentum": 0.0, "weight_decay": 0.0}
    disc = {"type": "sgd", "lr": LR_D, "momentum": 0.0, "weight_decay": 0.0}
    return {
        "name": "uda",
        "steps": steps,
        "batch_size": 2,
        "tasks": ["semantic"],
        "sets": ["seg"],
        "sampler": "none",
        "optimizer": optimizer if sgd else {"lr": 1e-3},
        "kind": {
            "type": "uda_adversarial",
            "target_sets": ["tag"],
            "lambda_adv": LAMBDA,
            "target_batch_size": 3,
            "discriminator": {"channels": 4, "layers": 2},
            **({"discriminator_optimizer": disc} if sgd else {}),
        },
    }


class Capture(L.Callback):
    """Keeps copies of the network and discriminators before the first step, and that batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.model = copy.deepcopy(pl_module.model)
            self.disc = copy.deepcopy(pl_module.discriminators)
            self.batch = batch

    def on_train_end(self, trainer, pl_module) -> None:
        self.after_model = {n: p.detach().clone() for n, p in pl_module.model.named_parameters()}
        self.after_disc = {
            n: p.detach().clone() for n, p in pl_module.discriminators.named_parameters()
        }


def _entropy(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    p = logits.softmax(dim=1)
    q = -p * torch.log(p)
    return F.interpolate(q, size=size, mode="bilinear", align_corners=False)


def test_one_step_equals_the_hand_written_step(tiny_data: Path, tmp_path: Path) -> None:
    config = make_config(tiny_data, [_stage(1)], deterministic=True)
    capture = Capture()
    run_recipe(config, tmp_path / "run", progress=False, callbacks=[capture])
    model, disc = capture.model, capture.disc
    source, target = capture.batch["source"], capture.batch["target"]
    assert len(source) == 2 and len(target) == 3
    assert not any(bool(v.any()) for v in target.labeled.values())  # images only
    model.train()

    losses, outputs = model.losses_and_outputs(source, ["semantic"])
    target_logits = model(target, ["semantic"], targets=False)["semantic"]["logits"]
    size = tuple(source.images.shape[-2:])
    q_src = _entropy(outputs["semantic"]["logits"], size)
    q_tgt = _entropy(target_logits, size)
    for p in disc.parameters():
        p.requires_grad_(False)
    d_out = disc["semantic"](q_tgt)
    adv = F.binary_cross_entropy_with_logits(d_out, torch.ones_like(d_out))
    weight = model.loss_weights["semantic"]
    network = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(weight * losses["semantic"] + LAMBDA * adv, [p for _, p in network],
                                allow_unused=True)  # fmt: skip
    moved = 0
    for (name, p), g in zip(network, grads, strict=True):
        expected = p.detach() if g is None else p.detach() - LR * g
        moved += g is not None and bool(g.abs().sum() > 0)
        torch.testing.assert_close(capture.after_model[name], expected, atol=1e-6, rtol=1e-5)
    assert moved > 0

    for p in disc.parameters():
        p.requires_grad_(True)
    d_src, d_tgt = disc["semantic"](q_src.detach()), disc["semantic"](q_tgt.detach())
    d_loss = F.binary_cross_entropy_with_logits(d_src, torch.ones_like(d_src))
    d_loss = d_loss + F.binary_cross_entropy_with_logits(d_tgt, torch.zeros_like(d_tgt))
    d_params = list(disc.named_parameters())
    d_grads = torch.autograd.grad(d_loss, [p for _, p in d_params])
    for (name, p), g in zip(d_params, d_grads, strict=True):
        torch.testing.assert_close(
            capture.after_disc[name], p.detach() - LR_D * g, atol=1e-6, rtol=1e-5
        )


def test_domain_maps_are_at_input_size_and_bce_is_the_mean() -> None:
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 0.5]]]])  # [1, 2, 1, 2]
    assert float(bce_to(logits, 1.0)) == pytest.approx(
        float(torch.log1p(torch.exp(-logits)).mean()), rel=1e-6
    )

    class Head:
        def domain_map(self, outputs, batch):
            return outputs

    class Model:
        def __init__(self) -> None:
            self.tasks = {"semantic": Head()}

    class FakeBatch:
        images = torch.zeros(1, 3, 4, 6)

    maps = domain_maps(
        Model(), {"semantic": torch.ones(1, 5, 2, 3)}, FakeBatch(), ["semantic", "depth"]
    )
    assert list(maps) == ["semantic"] and maps["semantic"].shape == (1, 5, 4, 6)
    assert domain_maps(Model(), None, FakeBatch(), ["semantic"]) == {}


@pytest.mark.slow
def test_killed_and_resumed_ends_bit_identical(tiny_data: Path, tmp_path: Path) -> None:
    config = make_config(tiny_data, [_stage(4, sgd=False)], deterministic=True,
                         checkpoint_every_n_steps=1)  # fmt: skip
    straight = run_recipe(config, tmp_path / "straight", progress=False)
    assert [(s.name, s.steps) for s in straight.stages] == [("uda", 4)]
    out = tmp_path / "interrupted"
    with pytest.raises(SimulatedKill):
        run_recipe(config, out, progress=False, callbacks=[KillAt("uda", 2)])
    resumed = run_recipe(config, out, resume=True, progress=False)
    assert [(s.name, s.steps) for s in resumed.stages] == [("uda", 4)]
    same_weights(straight.final_weights, resumed.final_weights)
    keys = torch.load(out / "stages" / "00-uda" / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("discriminators.semantic.") for k in keys["state_dict"])


def test_the_module_refuses_task_gradient_weightings(tiny_data: Path, tmp_path: Path) -> None:
    stage = {**_stage(1), "loss_weighting": {"type": "pcgrad"}}
    config = make_config(tiny_data, [stage])
    with pytest.raises(AdaptationError, match="PCGrad, MGDA"):
        run_recipe(config, tmp_path / "run", progress=False)
