"""`drivemtl predict` on an image, a folder and a short video, with an untrained tiny model."""

import numpy as np
import pytest
import torch
import yaml

from drivemtl.cli.main import main
from drivemtl.engine.checkpoint import CheckpointError, save_weights
from drivemtl.engine.run_config import load_run_config
from drivemtl.inference.predictor import Predictor
from drivemtl.inference.run import run_predict
from drivemtl.inference.sources import VideoWriter, open_source
from drivemtl.models import build_model
from drivemtl.structures.scalabel import load_frames

TASKS = {
    "tagging": {},
    "semantic": {"head": {"channels": 16}},
    "drivable": {"head": {"channels": 16}},
    "lanes": {"head": {"channels": 16}},
    "detection": {"head": {"roi": {"fc_dim": 32, "detections_per_image": 5}}},
    "instance": {"head": {"channels": 16, "num_convs": 1}},
    "depth": {"head": {"channels": 16}},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny config and weights for it (untrained: predict needs no training)."""
    root = tmp_path_factory.mktemp("model")
    cfg = {
        "model": {"backbone": {"width": 8}, "neck": {"out_channels": 16}, "tasks": TASKS},
        "data": {
            "sets": {"s": {"root": str(root), "tasks": ["semantic"]}},
            "transforms": {"heights": [64]},
        },
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_run_config(path)
    torch.manual_seed(0)
    weights = save_weights(build_model(config.model), root / "w.safetensors")
    return path, weights


def frames(n, h=60, w=100):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_predictions_come_back_in_original_coordinates(trained):
    cfg_path, weights = trained
    predictor = Predictor(load_run_config(cfg_path), weights)
    image = frames(1, 75, 124)[0]
    pred = predictor(image, "x.png")
    assert pred.semantic.shape == (75, 124) and pred.depth.shape == (75, 124)
    assert pred.lanes.shape == (3, 75, 124)
    boxes = pred.detections.boxes
    assert len(boxes) <= 5
    if len(boxes):
        assert float(boxes[:, 2].max()) <= 124 and float(boxes[:, 3].max()) <= 75


def test_predict_image_folder_and_video(trained, tmp_path):
    import cv2

    cfg_path, weights = trained
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(frames(2)):
        cv2.imwrite(str(folder / f"f{i}.png"), image[..., ::-1])
    config = load_run_config(cfg_path)

    single = run_predict(config, weights, folder / "f0.png", tmp_path / "one", progress=False)
    assert single.frames == 1 and single.overlays[0].is_file()

    many = run_predict(config, weights, folder, tmp_path / "many", panels=True, progress=False)
    assert many.frames == 2
    parsed = load_frames(many.predictions)
    assert [f.name for f in parsed] == ["f0.png", "f1.png"]
    # a folder of frames is one video named after the folder, with an MP4 like a video file
    assert [(f.videoName, f.frameIndex) for f in parsed] == [("imgs", 0), ("imgs", 1)]
    assert many.videos == [tmp_path / "many" / "imgs_overlay.mp4"]
    assert len(list(open_source(many.video))) == 2
    assert (tmp_path / "many" / "masks" / "sem_seg" / "f0.png").is_file()
    assert (tmp_path / "many" / "panels" / "depth" / "f1.png").is_file()

    video = tmp_path / "clip.mp4"
    writer = VideoWriter(video, fps=5)
    for image in frames(3, 64, 96):
        writer.write(image)
    writer.close()
    clip = run_predict(
        config, weights, video, tmp_path / "vid", tasks=["semantic", "detection"], progress=False
    )
    assert clip.frames == 3 and clip.video.is_file() and clip.video.stat().st_size > 0
    assert clip.videos == [tmp_path / "vid" / "clip_overlay.mp4"]
    parsed = load_frames(clip.predictions)
    assert [f.frameIndex for f in parsed] == [0, 1, 2] and parsed[0].videoName == "clip"
    assert parsed[0].name == "clip-0000001.jpg"
    assert not (tmp_path / "vid" / "masks" / "drivable").exists()  # only the asked tasks


# An untrained detector + QDTrack model whose tracker starts a track for every detection.
TRACKING = {
    "detection": {
        "head": {
            "rpn": {"pre_nms_topk_test": 100, "post_nms_topk_test": 32},
            "roi": {"fc_dim": 32, "detections_per_image": 5},
        }
    },
    "mot": {
        "head": {
            "channels": 16, "num_convs": 1, "norm_groups": 4, "fc_dim": 32, "embed_dim": 16,
            "tracker": {"init_score": 0.0, "object_score": 0.0},
        }
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A tiny detection + MOT config and (untrained) weights for it."""
    root = tmp_path_factory.mktemp("mot_model")
    cfg = {
        "model": {"backbone": {"width": 8}, "neck": {"out_channels": 16}, "tasks": TRACKING},
        "data": {
            "sets": {"s": {"root": str(root), "tasks": ["detection"]}},
            "transforms": {"heights": [64]},
        },
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_run_config(path)
    torch.manual_seed(0)
    return config, save_weights(build_model(config.model), root / "w.safetensors")


def _ids(prediction) -> list[int]:
    return prediction.detections.track_ids.tolist()


def test_a_tracking_folder_is_tracked_video_by_video(tracking, tmp_path):
    """A BDD100K tracking folder (one sub-folder per video): track ids carry over between the
    frames of a video exactly as the predictor's state carries them, every video starts with a
    fresh tracker, box_track.json groups the frames by video, and each video gets its MP4."""
    import cv2

    config, weights = tracking
    root = tmp_path / "track" / "val"
    images = frames(3)
    videos = {"a1": images, "b2": images[:2]}  # b2 shows a1's first frames again
    for video, shots in videos.items():
        (root / video).mkdir(parents=True)
        for i, image in enumerate(shots):
            cv2.imwrite(str(root / video / f"{video}-{i + 1:07d}.jpg"), image[..., ::-1])
    out = tmp_path / "out"
    result = run_predict(config, weights, root, out, progress=False)
    assert result.frames == 5

    # what the predictor yields, fed by hand: one predictor per video, frames in order
    expected = []
    for video in videos:
        predictor = Predictor(config, weights)
        for i, frame in enumerate(open_source(root / video)):
            assert frame.index == i and frame.video == video
            expected.append(_ids(predictor(frame.image, frame.name, i, video)))
    still = _ids(Predictor(config, weights)(list(open_source(root / "a1"))[1].image, "x"))
    assert expected[1] != still  # the setup is sensitive: a carried state changes the ids
    assert expected[3:] == expected[:2]  # b2 starts afresh: a1's first frames' ids again

    tracked = load_frames(out / "box_track.json")
    assert [(f.videoName, f.frameIndex, f.name) for f in tracked] == [
        ("a1", 0, "a1-0000001.jpg"),
        ("a1", 1, "a1-0000002.jpg"),
        ("a1", 2, "a1-0000003.jpg"),
        ("b2", 0, "b2-0000001.jpg"),
        ("b2", 1, "b2-0000002.jpg"),
    ]
    written = [sorted(int(label.id) for label in f.labels or []) for f in tracked]
    assert written == [sorted(i for i in ids if i >= 0) for ids in expected]
    assert result.videos == [out / "a1_overlay.mp4", out / "b2_overlay.mp4"]
    assert [len(list(open_source(v))) for v in result.videos] == [3, 2]
    assert (out / "overlays" / "b2-0000002.png").is_file()


def test_bad_inputs_are_one_line_errors(trained, tmp_path, capsys):
    cfg_path, weights = trained
    other = tmp_path / "other.safetensors"
    save_weights(
        {"backbone.conv1.weight": torch.zeros(8, 3, 7, 7), "extra.bias": torch.zeros(3)}, other
    )
    with pytest.raises(CheckpointError, match=r"other.safetensors: does not match the model"):
        Predictor(load_run_config(cfg_path), other)

    def run(*argv):
        try:
            code = main(["predict", str(cfg_path), *argv])
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr().err

    code, err = run(
        "--checkpoint",
        str(weights),
        "--source",
        str(tmp_path / "none.png"),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and "none.png: source does not exist" in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    code, err = run(
        "--checkpoint", str(weights), "--source", str(broken), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "broken.mp4" in err
    image = tmp_path / "ok.png"
    import cv2

    cv2.imwrite(str(image), frames(1)[0])
    code, err = run(
        "--checkpoint", str(other), "--source", str(image), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "other.safetensors: does not match the model" in err
    code, err = run(
        "--checkpoint",
        str(tmp_path / "missing.safetensors"),
        "--source",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and "missing.safetensors" in err


FLOW = {"flow": {"head": {"decoder_widths": [8, 8], "context_widths": [8, 8],
                          "context_dilations": [1, 1]}}}  # fmt: skip


def test_video_frames_get_their_forward_flow_to_the_next_frame(tmp_path):
    """A flow model on a 3-frame folder: frames 1 and 2 get the flow of the pair (frame, next
    frame) as the predictor computes it, written as KITTI PNGs and colour pictures; the last
    frame and a still image get none; the pair does not disturb the per-frame predictions."""
    import cv2

    from drivemtl.data.png_codecs import decode_flow

    cfg = {
        "model": {"backbone": {"width": 8}, "neck": {"out_channels": 16}, "tasks": FLOW},
        "data": {"sets": {"s": {"root": str(tmp_path), "tasks": ["flow"]}},
                 "transforms": {"heights": [64]}},
    }  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_run_config(path)
    torch.manual_seed(0)
    weights = save_weights(build_model(config.model), tmp_path / "w.safetensors")
    folder = tmp_path / "clip"
    folder.mkdir()
    images = frames(3)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"f{i}.png"), image[..., ::-1])
    result = run_predict(config, weights, folder, tmp_path / "out", progress=False)
    assert result.frames == 3
    written = sorted(p.name for p in (tmp_path / "out" / "flow").iterdir())
    assert written == ["f0.png", "f1.png"]
    assert [p.name for p in result.flow_pictures] == ["f0.png", "f1.png"]

    predictor = Predictor(config, weights)
    samples = [predictor.sample(im, f"f{i}.png", i, "clip") for i, im in enumerate(images)]
    assert predictor.predict([samples[0]])[0].flow is None  # one frame alone has no flow
    for i in range(2):
        expected = predictor.flow(samples[i], samples[i + 1]).numpy()
        assert expected.shape == (2, 60, 100) and np.abs(expected).max() > 0
        png = cv2.imread(str(tmp_path / "out" / "flow" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        flow, valid = decode_flow(png[..., ::-1])
        assert valid.all()
        np.testing.assert_allclose(flow, expected, atol=1 / 64)
    still = run_predict(config, weights, folder / "f0.png", tmp_path / "still", progress=False)
    assert still.flow_pictures == [] and not (tmp_path / "still" / "flow").exists()
