"""Write rendered frames in the canonical layout: JPEG images (PNG for lossless sets), Scalabel
frames, BDD100K bitmasks and KITTI-style 16-bit PNGs (see docs/data_format.md)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from drivemtl.data.png_codecs import (
    FLAG_OCCLUDED,
    FLAG_TRUNCATED,
    encode_depth,
    flow_planes,
    instance_planes,
    normal_planes,
    write_bytes,
    write_png,
    write_png_planes,
)
from drivemtl.data.synthetic.render import THING_INDEX, SynthFrame
from drivemtl.structures.bdd import LANE_CATEGORIES, LANE_DIRECTIONS, LANE_STYLES, POSE_JOINTS
from drivemtl.structures.scalabel import (
    Box2D,
    Frame,
    Graph,
    ImageSize,
    Label,
    Node,
    Poly2D,
    skeleton_edges,
)

JPEG_QUALITY = 92
BOX_TASKS = {"detection", "instance", "mot", "mots", "pose"}
PERSONS = {"pedestrian", "rider"}


def frame_label(frame: SynthFrame, name: str, tasks: set[str], video: str | None) -> Frame:
    """The Scalabel frame of `frame` holding only the labels of `tasks`."""
    labels: list[Label] = []
    if tasks & BOX_TASKS:
        for obj in frame.objects:
            if obj.category not in THING_INDEX and "detection" not in tasks:
                continue
            if not tasks & (BOX_TASKS - {"pose"}) and obj.category not in PERSONS:
                continue
            graph = None
            if "pose" in tasks and obj.keypoints is not None:
                graph = Graph(
                    nodes=[
                        Node(location=(round(float(x), 2), round(float(y), 2)), category=joint,
                             id=f"{obj.track_id}-{j}", visibility="V" if v > 0 else "N")
                        for j, (joint, (x, y, v)) in enumerate(zip(POSE_JOINTS, obj.keypoints, strict=True))
                    ],
                    edges=skeleton_edges({j: f"{obj.track_id}-{j}" for j in range(len(POSE_JOINTS))}),
                    type="Pose2D-18Joints",
                )  # fmt: skip
            labels.append(Label(
                id=str(obj.track_id), category=obj.category,
                attributes={"occluded": obj.occluded, "truncated": obj.truncated, "crowd": False},
                box2d=Box2D(x1=obj.box[0], y1=obj.box[1], x2=obj.box[2], y2=obj.box[3]),
                graph=graph,
            ))  # fmt: skip
    if "lanes" in tasks:
        for k, lane in enumerate(frame.lane_lines):
            labels.append(Label(
                id=f"lane-{k}", category=LANE_CATEGORIES[lane.category],
                attributes={
                    "laneDirection": LANE_DIRECTIONS[lane.direction],
                    "laneStyle": LANE_STYLES[lane.style],
                    "laneCategory": LANE_CATEGORIES[lane.category],
                },
                poly2d=[Poly2D(
                    vertices=[(round(float(x), 2), round(float(y), 2)) for x, y in lane.vertices],
                    types="L" * len(lane.vertices), closed=False,
                )],
            ))  # fmt: skip
    h, w = frame.semantic.shape
    return Frame(
        name=name,
        videoName=video,
        frameIndex=frame.frame_index if video is not None else None,
        attributes=dict(frame.tags) if "tagging" in tasks else None,
        size=ImageSize(width=w, height=h),
        labels=labels,
    )


def write_image(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image: lossless PNG for a ``.png`` path, else JPEG (`JPEG_QUALITY`).

    Sets that train flow photometrically (`SetSpec.lossless`, preset `tracking`) use PNG: JPEG's
    artefacts sit on its fixed 8x8 block grid, so they stay put while the scene moves and make the
    census loss favour zero flow (docs/video_tasks.md).
    """
    png = path.suffix.lower() == ".png"
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if png else [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    ok, data = cv2.imencode(".png" if png else ".jpg", image[..., ::-1], params)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    write_bytes(path, data)


def write_frame(root: Path, name: str, frame: SynthFrame, tasks: set[str]) -> None:
    """Write the image and the label files of `tasks` for `frame` under the set folder `root`.

    PNG row filters are chosen for encoding speed (all lossless): "up" for the piecewise-constant
    maps, depth and normals, "sub" for flow (smooth along rows, twice as fast as "up" there).
    """
    stem = str(Path(name).with_suffix(".png"))
    write_image(root / "images" / name, frame.image)
    if "semantic" in tasks:
        write_png(root / "masks" / "semantic" / stem, frame.semantic, row_filter="up")
    if "drivable" in tasks:
        write_png(root / "masks" / "drivable" / stem, frame.drivable, row_filter="up")
    if "lanes" in tasks:
        write_png(root / "masks" / "lanes" / stem, frame.lanes, row_filter="up")
    if tasks & {"instance", "mots"}:
        flags = np.zeros(int(frame.instance_ids.max(initial=0)) + 1, np.uint8)
        for obj in frame.things:
            flags[obj.track_id] = FLAG_TRUNCATED * obj.truncated + FLAG_OCCLUDED * obj.occluded
        planes = instance_planes(
            frame.instance_category, frame.instance_ids, flags[frame.instance_ids]
        )
        write_png_planes(root / "masks" / "instance" / stem, planes, row_filter="up")
    if "edges" in tasks:
        write_png(root / "masks" / "edges" / stem, frame.edges, row_filter="up")
    if "depth" in tasks:
        write_png(root / "depth" / stem, encode_depth(frame.depth), row_filter="up")
    if "normals" in tasks:
        write_png_planes(root / "normals" / stem, normal_planes(frame.normals), row_filter="up")
    if "flow" in tasks:
        if frame.flow is None or frame.flow_valid is None:
            raise ValueError(f"frame {name}: flow requested but not rendered")
        write_png_planes(root / "flow" / stem, flow_planes(frame.flow, frame.flow_valid))
