import tomllib

from drivemtl.structures import bdd


def test_constants_match_the_official_configs(fixtures_dir):
    configs = fixtures_dir / "bdd100k" / "configs"
    sem = tomllib.loads((configs / "sem_seg.toml").read_text())
    assert tuple(c["name"] for c in sem["scalabel"]["categories"]) == bdd.SEMANTIC_CLASSES
    pose = tomllib.loads((configs / "pose.toml").read_text())
    assert tuple(pose["scalabel"]["poseSigmas"]) == bdd.POSE_SIGMAS
    lanes = tomllib.loads((configs / "lane_mark.toml").read_text())
    groups = {
        c["name"]: tuple(s["name"] for s in c["subcategories"])
        for c in lanes["scalabel"]["categories"]
    }
    assert groups["category"] == bdd.LANE_CATEGORIES
    assert groups["direction"] == bdd.LANE_DIRECTIONS and groups["style"] == bdd.LANE_STYLES
    track = tomllib.loads((configs / "box_track.toml").read_text())
    leaves = [
        s["name"] for c in track["scalabel"]["categories"] for s in c.get("subcategories", [])
    ]
    assert tuple(leaves) == bdd.THING_CLASSES


def test_flip_pairs_swap_left_and_right():
    for left, right in bdd.POSE_FLIP_PAIRS:
        assert bdd.POSE_JOINTS[left].replace("left_", "") == bdd.POSE_JOINTS[right].replace(
            "right_", ""
        )
    assert len(bdd.POSE_FLIP_PAIRS) == 8
