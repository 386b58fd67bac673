import json

import pytest

from drivemtl.structures.scalabel import Frame, ScalabelFormatError, load_frames, save_frames


def test_real_files_load_with_their_counts(fixtures_dir):
    bdd = fixtures_dir / "bdd100k"
    frames = load_frames(bdd / "box_track" / "track_sample_anns.json")
    assert len(frames) == 202
    assert sum(len(f.labels or []) for f in frames) == 3241
    first = frames[0]
    assert (first.name, first.videoName, first.frameIndex) == (
        "b1c66a42-6f7d68ca-0000001.jpg",
        "b1c66a42-6f7d68ca",
        0,
    )
    label = first.labels[0]
    assert label.id == "a-00122062" and label.category == "car"
    assert label.attributes == {"occluded": False, "truncated": True, "crowd": False}
    assert label.box2d.x1 == 0 and abs(label.box2d.y2 - 407.4496307987563) < 1e-12

    pose = load_frames(bdd / "pose" / "pose_sample.json")
    nodes = pose[0].labels[0].graph.nodes
    assert len(nodes) == 18 and nodes[0].category == "head" and nodes[0].visibility == "V"

    sem = load_frames(bdd / "sem_seg" / "sem_seg_sample.json")
    assert sem[0].labels[0].rle.size == (720, 1280)


def test_round_trip_and_folder_of_videos(tmp_path):
    frames = [
        Frame.model_validate(
            {
                "name": "v-1.jpg",
                "videoName": "v",
                "frameIndex": 0,
                "labels": [
                    {"id": 3, "category": "car", "box2d": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}}
                ],
            }
        ),
        Frame(name="w-1.jpg", videoName="w", frameIndex=0),
    ]
    save_frames(frames[:1], tmp_path / "vids" / "v.json")
    save_frames(frames[1:], tmp_path / "vids" / "w.json")
    loaded = load_frames(tmp_path / "vids")
    assert loaded == frames
    raw = json.loads((tmp_path / "vids" / "v.json").read_text())
    assert raw[0]["labels"][0] == {
        "id": "3",
        "category": "car",
        "box2d": {"x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0},
    }


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("[{", r"malformed JSON"),
        ('{"a": 1}', r"frame '#0': name: Field required"),
        (
            '[{"name": "f.jpg", "labels": [{"id": "7", "box2d": {"x1": 5, "y1": 0, "x2": 1, "y2": 3}}]}]',
            r"frame 'f.jpg', label id '7': labels.0.box2d: .*x2 < x1",
        ),
        (
            '[{"name": "f.jpg", "labels": [{"id": "1", "poly2d": [{"vertices": [[0, 0], [1, 1]], "types": "L", "closed": false}]}]}]',
            r"2 vertices but 1 vertex types",
        ),
        ("3", r"expected a list of frames"),
    ],
)
def test_malformed_files_name_file_and_frame(tmp_path, content, pattern):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ScalabelFormatError, match=pattern) as err:
        load_frames(path)
    assert str(path) in str(err.value)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(ScalabelFormatError, match="label file not found"):
        load_frames(tmp_path / "none.json")
    with pytest.raises(ScalabelFormatError, match=r"holds no \*.json"):
        load_frames(tmp_path)


def test_graphs_need_edges_as_in_the_official_schema(tmp_path):
    path = tmp_path / "pose.json"
    node = {"location": [1.0, 2.0], "category": "head", "id": "7-0"}
    label = {"id": "7", "category": "pedestrian", "graph": {"nodes": [node], "type": "Pose2D"}}
    path.write_text(json.dumps([{"name": "a.jpg", "labels": [label]}]))
    with pytest.raises(ScalabelFormatError, match="edges"):
        load_frames(path)
    label["graph"]["edges"] = []
    path.write_text(json.dumps([{"name": "a.jpg", "labels": [label]}]))
    assert load_frames(path)[0].labels[0].graph.edges == []


def test_skeleton_edges_join_only_the_joints_present():
    from drivemtl.structures.bdd import POSE_SKELETON
    from drivemtl.structures.scalabel import skeleton_edges

    every = skeleton_edges({j: f"p-{j}" for j in range(18)})
    assert [(e.source, e.target, e.type) for e in every] == [
        (f"p-{a}", f"p-{b}", "body") for a, b in POSE_SKELETON
    ]
    some = skeleton_edges({0: "n0", 1: "n1", 2: "n2"})
    assert [(e.source, e.target) for e in some] == [("n0", "n1"), ("n1", "n2")]
