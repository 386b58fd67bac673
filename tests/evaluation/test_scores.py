"""VTDA against the paper's Table 14, Delta_T by hand, and the report writer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from drivemtl.evaluation.delta import delta_t
from drivemtl.evaluation.report import write_report
from drivemtl.evaluation.vtda import PAPER_SCALES, scale_from_sigma, vtda

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
