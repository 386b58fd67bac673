"""`drivemtl export` and `drivemtl predict --onnx`: the exported model writes the same BDD100K
files and overlays as the PyTorch model; bad inputs are one-line errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from drivemtl.cli.main import main
from drivemtl.engine.checkpoint import save_weights
from drivemtl.engine.run_config import load_run_config
from drivemtl.models import build_model

TASKS = {
    "tagging": {},
    "semantic": {"head": {"channels": 8}},
    "lanes": {"head": {"channels": 8}},
    "detection": {"head": {"roi": {"fc_dim": 16, "detections_per_image": 6}}},
    "instance": {"head": {"channels": 8, "num_convs": 1}},
}


def write_config(root, tasks):
    cfg = {
        "model": {"backbone": {"width": 8}, "neck": {"out_channels": 8}, "tasks": tasks},
        "data": {
            "sets": {"s": {"root": str(root), "tasks": ["semantic"]}},
            "transforms": {"heights": [64]},
        },
    }
    path = root / f"cfg{len(list(root.glob('cfg*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Config, weights (detector scores spread wide: no near-ties) and two frames."""
    root = tmp_path_factory.mktemp("cli_export")
    config = write_config(root, TASKS)
    torch.manual_seed(0)
    model = build_model(load_run_config(config).model)
    with torch.no_grad():
        for layer in (
            model.heads["detection"].box_head.cls_score,
            model.heads["instance"].predictor,
        ):
            layer.weight.mul_(50.0)
    weights = save_weights(model, root / "w.safetensors")
    frames = root / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 100), (72, 90)]):
        cv2.imwrite(str(frames / f"f{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return root, config, weights, frames


@pytest.fixture(scope="module")
def exported(model_files):
    """`drivemtl export` of the model: (exit code, stdout, stderr, folder)."""
    root, config, weights, _ = model_files
    folder = root / "onnx"
    try:
        code = main(["export", str(config), "--checkpoint", str(weights), "--out", str(folder)])
    except SystemExit as exc:
        code = exc.code or 0
    return code, folder


def test_export_then_predict_onnx_writes_what_pytorch_writes(model_files, exported, capsys):
    root, config, weights, frames = model_files
    code, onnx_dir = exported
    assert code == 0 and (onnx_dir / "model_card.json").is_file()
    torch_out, onnx_out = root / "pt", root / "ort"
    base = ["predict", "--source", str(frames), "--no-progress"]
    code, _, err = run([*base, str(config), "--checkpoint", str(weights), "--out", str(torch_out)],
                       capsys)  # fmt: skip
    assert code == 0, err
    code, _, err = run([*base, "--onnx", str(onnx_dir), "--out", str(onnx_out)], capsys)
    assert code == 0, err
    ref = json.loads((torch_out / "predictions.json").read_text())
    got = json.loads((onnx_out / "predictions.json").read_text())
    ref_frames = ref["frames"] if isinstance(ref, dict) else ref
    got_frames = got["frames"] if isinstance(got, dict) else got
    assert [f["name"] for f in got_frames] == ["f0.png", "f1.png"]
    boxes = 0
    for a, b in zip(ref_frames, got_frames, strict=True):
        assert a["attributes"] == b["attributes"]
        assert [x["category"] for x in a["labels"]] == [x["category"] for x in b["labels"]]
        for la, lb in zip(a["labels"], b["labels"], strict=True):
            assert la.get("rle") == lb.get("rle")
            if la.get("box2d"):
                boxes += 1
                for key, value in la["box2d"].items():
                    assert abs(value - lb["box2d"][key]) <= 1e-2, key
    assert boxes > 0
    for folder in ("masks/sem_seg", "masks/lane", "masks/ins_seg", "overlays"):
        paths = sorted((torch_out / folder).glob("*.png"))
        assert len(paths) == 2, folder
        for path in paths:
            same = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(same, cv2.imread(str(onnx_out / folder / path.name), -1)), path


def test_predict_onnx_refuses_the_config_of_another_model(model_files, exported, capsys):
    root, _, _, frames = model_files
    onnx_dir = exported[1]
    other = write_config(root, {**TASKS, "detection": {"head": {"num_classes": 10}}})
    code, _, err = run(["predict", str(other), "--onnx", str(onnx_dir), "--source", str(frames),
                        "--out", str(root / "x")], capsys)  # fmt: skip
    assert code == 2
    assert "model_card.json: the ONNX model was exported from another model" in err
    assert "classes of detection: 8 in the export, 10 in the config" in err
    code, _, err = run(["predict", "--onnx", str(root / "nowhere"), "--source", str(frames),
                        "--out", str(root / "x")], capsys)  # fmt: skip
    assert code == 2 and "nowhere: no such ONNX export folder" in err


def test_export_bad_inputs_are_one_line_errors(model_files, exported, capsys):
    root, config, weights, _ = model_files
    code, _, err = run(["export", str(config), "--checkpoint", str(weights), "--format", "tflite",
                        "--out", str(root / "t")], capsys)  # fmt: skip
    assert code == 2 and "--format tflite: unknown export format; known: onnx" in err
    aspp = write_config(root, {"semantic": {"head": {"type": "aspp_skip"}}})
    torch.manual_seed(0)
    aspp_weights = save_weights(build_model(load_run_config(aspp).model), root / "a.safetensors")
    code, _, err = run(["export", str(aspp), "--checkpoint", str(aspp_weights), "--out",
                        str(root / "a")], capsys)  # fmt: skip
    assert code == 2 and "model.tasks.semantic head (ASPPSkipDecoder) cannot be exported" in err
    assert (
        "its raw outputs are a ScaleOutputs" in err
        and not (root / "a" / "model_card.json").exists()
    )
    code, _, err = run(["export", str(config), "--checkpoint", str(weights), "--out",
                        str(exported[1])], capsys)  # fmt: skip
    assert code == 2 and "model_card.json already exists; pass --overwrite" in err


MOT_HEAD = {"channels": 8, "num_convs": 1, "norm_groups": 4, "fc_dim": 16, "embed_dim": 8}
FLOW_HEAD = {"strides": [16, 8], "decoder_widths": [8], "context_widths": [8],
             "context_dilations": [1]}  # fmt: skip


@pytest.mark.parametrize(
    ("tasks", "refused"),
    [
        ({"semantic": {"head": {"channels": 8}}, "flow": {"head": FLOW_HEAD}},
         "model.tasks.flow head (PWCFlowHead) cannot be exported: it predicts from a frame pair"),
        ({"detection": {"head": {"roi": {"fc_dim": 16}}}, "instance": {"head": {"channels": 8}},
          "mot": {"head": MOT_HEAD}, "mots": {}},
         "model.tasks.mot head (QuasiDenseEmbeddingHead) cannot be exported: a tracker's "
         "embedding head"),
    ],
)  # fmt: skip
def test_export_refuses_the_video_tasks_by_name(model_files, capsys, tasks, refused):
    """flow (a frame-pair network) and mot / mots (RoI embeddings + a tracker's state outside
    the network): a one-line error naming the head and why, and no folder written."""
    root = model_files[0]
    config = write_config(root, tasks)
    torch.manual_seed(0)
    weights = save_weights(build_model(load_run_config(config).model), root / "v.safetensors")
    out = root / f"video_{len(tasks)}"
    code, _, err = run(["export", str(config), "--checkpoint", str(weights), "--out", str(out)],
                       capsys)  # fmt: skip
    assert code == 2 and refused in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (out / "model_card.json").exists()
