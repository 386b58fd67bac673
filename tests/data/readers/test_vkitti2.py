"""Virtual KITTI 2 reader on tiny files written in the official layout."""

from __future__ import annotations

import numpy as np
import torch

from drivemtl.data import DataConfig, build_dataset
from drivemtl.data.png_codecs import write_png
from drivemtl.structures.bdd import IGNORE_INDEX, SEMANTIC_CLASSES

H, W = 12, 20


def test_vkitti2_semantic_depth_normals(tmp_path, image_writer):
    scene = tmp_path / "Scene01" / "clone"
    (scene).mkdir(parents=True)
    (scene / "colors.txt").write_text(
        "Category r g b\nRoad 100 60 100\nSky 90 200 255\nCar 255 127 80\nMisc 80 80 80\n"
    )
    (scene / "intrinsic.txt").write_text(
        "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n0 0 30.0 30.0 10.0 6.0\n1 0 30.0 30.0 10.0 6.0\n"
    )
    for f in range(2):
        image_writer(scene / f"frames/rgb/Camera_0/rgb_{f:05d}.jpg", H, W, 100)
        seg = np.zeros((H, W, 3), np.uint8)
        seg[:] = (100, 60, 100)
        seg[:3] = (90, 200, 255)
        seg[6:9, 2:6] = (255, 127, 80)
        seg[11, 19] = (80, 80, 80)
        write_png(scene / f"frames/classSegmentation/Camera_0/classgt_{f:05d}.png", seg)
        depth = np.full((H, W), 2000, np.uint16)  # 20 m wall
        depth[:3] = 65535  # sky
        write_png(scene / f"frames/depth/Camera_0/depth_{f:05d}.png", depth)
    cfg = DataConfig(
        sets={
            "v": {
                "reader": "vkitti2",
                "root": str(tmp_path),
                "tasks": ["semantic", "depth", "normals"],
            }
        },
        transforms={"resize": False, "normalize": False, "flip": 0.0},
    )
    ds = build_dataset(cfg)
    assert len(ds) == 2
    s = ds[1]
    assert (s.meta.video, s.meta.frame_index) == ("Scene01/clone", 1)
    assert s.semantic[0, 0] == SEMANTIC_CLASSES.index("sky")
    assert s.semantic[7, 3] == SEMANTIC_CLASSES.index("car") and s.semantic[11, 19] == IGNORE_INDEX
    assert s.semantic[10, 10] == SEMANTIC_CLASSES.index("road")
    assert (s.depth[:3] == 0).all() and torch.allclose(s.depth[3:], torch.full((9, W), 20.0))
    assert torch.allclose(
        s.normals[:, 5:-1, 1:-1],
        torch.tensor([0.0, 0.0, -1.0])[:, None, None].expand(3, 6, 18),
        atol=1e-4,
    )
