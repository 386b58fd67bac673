"""VTDA against the paper's Table 14, Delta_T by hand, and the report writer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from drivemtl.evaluation.delta import delta_against, delta_t
from drivemtl.evaluation.report import write_report
from drivemtl.evaluation.vtda import (
    PAPER_SCALES,
    VtdFlowEvaluator,
    scale_from_sigma,
    vtda,
    vtda_scores,
)
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import SampleMeta

KEYS = list(PAPER_SCALES)
ST_BASELINES = [81.9, 77.9, 59.7, 83.9, 28.4, 32.3, 20.2, 37.0, 32.9, 27.2, 59.6, 48.8, 42.4]
VTDNET = [83.2, 79.7, 63.8, 85.4, 27.8, 33.4, 27.1, 39.7, 34.7, 31.6, 60.3, 50.1, 45.1]


def test_vtda_reproduces_paper_table() -> None:
    st = vtda(dict(zip(KEYS, ST_BASELINES, strict=True)))
    assert [round(v, 1) for v in st.groups.values()] == [80.6, 56.7, 29.7, 51.3]
    assert st.total == pytest.approx(218.2, abs=0.06)
    ours = vtda(dict(zip(KEYS, VTDNET, strict=True)))
    assert [round(v, 1) for v in ours.groups.values()] == [82.0, 57.8, 32.9, 52.7]
    assert scale_from_sigma(3.1) == pytest.approx(1 / 7)
    partial = vtda({"tagging/weather": 80.0})
    assert partial.total == 80.0 and math.isnan(partial.groups["association"])


def test_delta_t_signs() -> None:
    single = {"semantic/mIoU": 50.0, "depth/RMSE": 4.0}
    multi = {"semantic/mIoU": 55.0, "depth/RMSE": 5.0}
    assert delta_t(multi, single) == pytest.approx(100 * (0.1 - 0.25) / 2)
    with pytest.raises(KeyError):
        delta_t({}, single)


def test_report_files(tmp_path: Path) -> None:
    json_path, md_path = write_report({"semantic": {"mIoU": 50.0, "IoU/a": math.nan}}, tmp_path)
    assert json.loads(json_path.read_text()) == {"semantic/mIoU": 50.0, "semantic/IoU/a": None}
    assert "| mIoU |" in md_path.read_text() and "50.00" in md_path.read_text()


def test_delta_against_single_task_runs(tmp_path: Path) -> None:
    """Hand-computed: semantic 60 vs 50 (+20 %), depth AbsRel 0.3 vs 0.25 (lower is better:
    -20 %), tagging 90 vs 75 (+20 %) -> Delta_T = (20 - 20 + 20) / 3 %."""
    (tmp_path / "sem").mkdir()
    (tmp_path / "sem/metrics.json").write_text(
        json.dumps({"semantic/mIoU": 50.0, "semantic/IoU/a": None, "resources/params_M": 3.0})
    )
    (tmp_path / "depth/eval").mkdir(parents=True)
    (tmp_path / "depth/eval/metrics.json").write_text(json.dumps({"depth/AbsRel": 0.25}))
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps({"tagging/acc": 75.0, "tagging/acc/weather": 10.0}))
    multi = {"semantic/mIoU": 60.0, "depth/AbsRel": 0.3, "tagging/acc": 90.0,
             "tagging/acc/weather": 11.0, "detection/AP": 1.0}  # fmt: skip
    report = delta_against(multi, [tmp_path / "sem", tmp_path / "depth", tags])
    assert report.single == {"tagging/acc": 75.0, "semantic/mIoU": 50.0, "depth/AbsRel": 0.25}
    assert report.delta == pytest.approx(20 / 3)
    assert report.gains["depth/AbsRel"] == pytest.approx(-20.0)
    row = report.as_dict()
    assert row["Delta_T"] == pytest.approx(20 / 3) and row["keys"] == 3
    chosen = delta_against(multi, [tags], ["tagging/acc/weather"])
    assert chosen.delta == pytest.approx(10.0)
    with pytest.raises(KeyError, match="semantic/mIoU"):
        delta_against(multi, [tags], ["semantic/mIoU"])
    with pytest.raises(FileNotFoundError, match=r"no metrics\.json"):
        delta_against(multi, [tmp_path / "sem/metrics.json.d"])
    with pytest.raises(ValueError, match="no headline metric"):
        delta_against({"detection/AP": 1.0}, [tags])


def _flow_batch(next_frame: int) -> tuple[list[FramePrediction], Batch]:
    """Key frame: a 2x2 object (track 7) at x 0..1; next frame: the same object at x 1..2."""
    h, w = 4, 6
    masks_t = torch.zeros(1, h, w, dtype=torch.bool)
    masks_t[0, 1:3, 0:2] = True
    masks_t1 = torch.zeros(1, h, w, dtype=torch.bool)
    masks_t1[0, 1:3, 1:3] = True

    def batch(masks: torch.Tensor, index: int) -> Batch:
        inst = Instances(boxes=torch.zeros(1, 4), classes=torch.zeros(1, dtype=torch.long),
                         track_ids=torch.tensor([7]), masks=masks)  # fmt: skip
        meta = SampleMeta(name=f"f{index}", image_set="s", orig_size=(h, w), video="v",
                          frame_index=index)  # fmt: skip
        return Batch(images=torch.zeros(1, 3, h, w), image_sizes=[(h, w)], metas=[meta],
                     labeled={}, instances=[inst], lane_lines=[None])  # fmt: skip

    key = batch(masks_t, 0)
    key.references = [batch(masks_t1, next_frame)]
    flow = torch.zeros(2, h, w)
    flow[0] = 1.0  # every pixel moves one to the right: the warp recovers the key mask
    return [FramePrediction(meta=key.metas[0], flow=flow)], key


def test_vtd_flow_proxy_from_model_predictions() -> None:
    ev = VtdFlowEvaluator()
    ev.update(*_flow_batch(next_frame=1))
    assert ev.compute()["mIoU"] == pytest.approx(100.0)
    still = VtdFlowEvaluator()
    preds, batch = _flow_batch(next_frame=1)
    preds[0].flow = torch.zeros(2, 4, 6)  # no motion: the warped mask overlaps by 2 of 6 pixels
    still.update(preds, batch)
    assert still.compute()["mIoU"] == pytest.approx(100 * 2 / 6)
    not_next = VtdFlowEvaluator()  # the reference is not the next frame: no proxy
    not_next.update(*_flow_batch(next_frame=5))
    assert math.isnan(not_next.compute()["mIoU"])
    assert math.isnan(vtda({"flow/mIoU": math.nan}).groups["association"])
    assert vtda_scores({"flow": ev.compute()})["flow/mIoU"] == pytest.approx(100.0)
