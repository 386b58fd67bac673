"""DDP on CPU: two gloo processes (ddp_spawn) hold identical weights and see disjoint samples."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from engine_fixtures import make_config

from drivemtl.engine.checkpoint import load_weights, save_weights
from drivemtl.engine.trainer import run_recipe
from drivemtl.models import build_model


class RecordRank(L.Callback):
    """Each rank writes the frames it trained on and its final weights into `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.names += [m.name for m in batch.metas]

    def on_train_end(self, trainer, pl_module) -> None:
        rank = trainer.global_rank
        (self.folder / f"names{rank}.json").write_text(json.dumps(self.names))
        save_weights(pl_module.model, self.folder / f"weights{rank}.safetensors")


@pytest.mark.slow
def test_two_cpu_ranks_stay_in_sync_on_disjoint_samples(tiny_data: Path, tmp_path: Path) -> None:
    stage = {
        "name": "joint",
        "steps": 2,
        "sampler": "none",
        "batch_size": 2,
        "optimizer": {"lr": 1e-2},
    }
    config = make_config(tiny_data, [stage], strategy="ddp_spawn", devices=2)
    record = tmp_path / "ranks"
    record.mkdir()
    result = run_recipe(config, tmp_path / "run", progress=False, callbacks=[RecordRank(record)])

    names = [json.loads((record / f"names{r}.json").read_text()) for r in (0, 1)]
    assert len(names[0]) == len(names[1]) == 4  # 2 steps x batch 2 on each rank
    assert not set(names[0]) & set(names[1])
    w0, w1 = (load_weights(record / f"weights{r}.safetensors") for r in (0, 1))
    different = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    # parameters are identical; BatchNorm running statistics are the only per-rank state (DDP
    # broadcasts rank 0's buffers at the start of each forward, the last update stays local)
    assert all(k.endswith(("running_mean", "running_var")) for k in different), different[:5]
    params = [n for n, _ in build_model(config.model).named_parameters()]
    assert params and not set(params) & set(different)
    final = load_weights(result.final_weights)
    assert all(torch.equal(final[k], w0[k]) for k in w0)
    assert result.stages[0].steps == 2
