"""VTDNet's CPF, the shipped recipe (configs/recipes/vtd_cpf.yaml), run end to end by one
`run_recipe` on a tiny synthetic `bdd-sets` dataset with every stage shortened to a few steps.

Checked: curriculum 2 leaves what curriculum 1 trained bit-identical; the pseudo-label stages
write semantic maps with every pixel below the teacher's 0.3 confidence ignored and poses with
no joint below 0.2 (exactly the teacher's thresholded predictions); joint training reads them;
per-decoder fine-tuning leaves the shared network bit-identical and the merged model holds each
sub-stage's decoder; a run killed in joint training and resumed skips the finished stages
(their files untouched) and ends bit-identical to the uninterrupted run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import pytest
import torch
import yaml
from engine_fixtures import KillAt, SimulatedKill, same_weights

from drivemtl.config.loader import validate_tree
from drivemtl.data import build_dataset, build_transforms
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.checkpoint import load_into, load_weights
from drivemtl.engine.plan import MergePlan, PseudoLabelPlan, StagePlan, plan_for_model
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.trainer import RunResult, run_recipe
from drivemtl.models import build_model
from drivemtl.structures.batch import collate

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "recipes" / "vtd_cpf.yaml"
SIZE = (96, 64)  # W x H of the synthetic frames
DETECTOR = {
    "rpn": {
        "anchor_sizes": [8, 16, 32, 64, 128],
        "pre_nms_topk_train": 100,
        "pre_nms_topk_test": 50,
        "post_nms_topk_train": 32,
        "post_nms_topk_test": 16,
        "batch_size_per_image": 32,
    },
    "roi": {"batch_size_per_image": 16, "fc_dim": 16, "detections_per_image": 40,
            "score_threshold": 0.0},
}  # fmt: skip
MODEL = {
    "backbone": {"type": "resnet18", "width": 8, "norm": "bn"},
    "neck": {"type": "fpn", "out_channels": 16, "norm": "gn"},
    "tasks": {
        "semantic": {"head": {"channels": 8}},
        "detection": {"head": {"num_classes": 10, **DETECTOR}},
        "instance": {"head": {"channels": 8, "num_convs": 1}},
        "pose": {"head": {"channels": 8, "num_convs": 1, "person_classes": ["pedestrian", "rider"]}},
        "mot": {"head": {"channels": 8, "num_convs": 1, "norm_groups": 4, "fc_dim": 16,
                         "embed_dim": 8, "rois_per_image": 16}},
        "mots": {},
    },
}  # fmt: skip
# Stage lengths: 2 steps, but enough for the semantic teacher to be sure of some pixels, and
# one epoch of joint training (8 batches: every image of every set once, sets in turn).
LENGTHS: dict[str, dict[str, int]] = {"teacher_semantic": {"steps": 6}, "joint": {"epochs": 1}}
SEMANTIC_CONFIDENCE, JOINT_SCORE = 0.3, 0.2  # the recipe's rules (App. H.2)


def shrink_stage(stage: dict[str, Any]) -> dict[str, Any]:
    """A recipe stage at test size: batches of 2, a few steps (`LENGTHS`), 2 warm-up steps."""
    out = dict(stage)
    if "kind" in out and out["kind"].get("type") == "pseudo_label":
        return {**out, "batch_size": 2}
    out.pop("epochs", None)
    out.update(LENGTHS.get(out["name"], {"steps": 2}))
    out["batch_size"] = 2
    schedule = dict(out.get("schedule", {}))
    if schedule.get("warmup_steps"):  # the first steps without warm-up can diverge
        schedule["warmup_steps"] = 2
    if "milestones" in schedule:
        schedule["milestones"] = [0.5] if "epochs" in out else [1]
    out["schedule"] = schedule
    return out


def cpf_config(data_root: Path) -> RunConfig:
    """The shipped CPF recipe, shrunk, on the tiny model and the tiny bdd-sets dataset."""
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["recipe"]
    tree = {
        "name": "cpf",
        "seed": 5,
        "model": MODEL,
        "data": {
            "sets": {
                "detection": {"root": str(data_root / "detection"), "tasks": ["detection", "pose"]},
                "segmentation": {
                    "root": str(data_root / "segmentation"),
                    "tasks": ["semantic", "instance"],
                },
                "tracking": {
                    "root": str(data_root / "tracking"),
                    "tasks": ["mot", "mots"],
                    "clip": {"length": 2, "sampling": "window", "window": 3},
                },
            },
            "transforms": {"heights": [SIZE[1]], "test_height": SIZE[1], "flip": 0.5},
        },
        "recipe": {"stages": [shrink_stage(s) for s in recipe["stages"]]},
        "train": {"accelerator": "cpu", "deterministic": True, "log_every_n_steps": 1,
                  "checkpoint_every_n_steps": 1},
    }  # fmt: skip
    return validate_tree(tree, {}, RunConfig, "<cpf test>")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the runs are tiny, and the CPUs are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def config(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    root = tmp_path_factory.mktemp("bdd_sets")
    generate_dataset(root, "bdd-sets", num_frames=14, size=SIZE, seed=3, progress=False)
    return cpf_config(root)


class JointLabels(L.Callback):
    """Records (image set, task) for every task labelled in a batch that joint training sees."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.settings.name != "joint":
            return
        for task, mask in batch.labeled.items():
            self.seen |= {
                (m.image_set, task) for m, hit in zip(batch.metas, mask, strict=True) if hit
            }


@pytest.fixture(scope="module")
def fed() -> JointLabels:
    """What the uninterrupted run's joint stage was fed."""
    return JointLabels()


@pytest.fixture(scope="module")
def straight(
    config: RunConfig, fed: JointLabels, tmp_path_factory: pytest.TempPathFactory
) -> RunResult:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("cpf") / "run"
    return run_recipe(config, out, progress=False, callbacks=[fed])


def stage_dir(result: RunResult, name: str) -> Path:
    """The run-directory folder of unit `name` (`stages/NN-name`)."""
    (folder,) = [
        p for p in (result.out_dir / "stages").iterdir() if p.name.split("-", 1)[1] == name
    ]
    return folder


def weights(result: RunResult, name: str) -> dict[str, torch.Tensor]:
    """The final weights of unit `name`."""
    return load_weights(stage_dir(result, name) / "weights.safetensors")


def test_the_plan_is_the_papers_protocol(config: RunConfig) -> None:
    units = plan_for_model(config, build_model(config.model))
    names = [u.name for u in units]
    assert names[:7] == ["curriculum_loc", "curriculum_inst", "teacher_semantic", "teacher_pose",
                         "pseudo_semantic", "pseudo_pose", "joint"]  # fmt: skip
    assert isinstance(units[-1], MergePlan) and units[-1].name == "decoders"
    labels = {u.name: u.labels for u in units if isinstance(u, PseudoLabelPlan)}
    assert labels == {
        "pseudo_semantic": {"detection": ["semantic"], "tracking": ["semantic"]},
        "pseudo_pose": {"segmentation": ["pose"], "tracking": ["pose"]},
    }
    joint = units[6]
    assert isinstance(joint, StagePlan) and joint.init == "stage:curriculum_inst"
    assert joint.sets == ["detection", "segmentation", "tracking"]
    assert set(joint.data.sets["detection"].pseudo_labels) == {"semantic"}


@pytest.mark.slow
def test_curriculum_two_keeps_curriculum_one_bit_identical(straight: RunResult) -> None:
    first, second = weights(straight, "curriculum_loc"), weights(straight, "curriculum_inst")
    frozen = ("backbone.", "neck.", "heads.detection.", "heads.mot.")
    kept = [k for k in first if k.startswith(frozen)]
    assert kept and all(torch.equal(first[k], second[k]) for k in kept)
    trained = [k for k in first if k.startswith(("heads.instance.", "heads.pose."))]
    assert any(not torch.equal(first[k], second[k]) for k in trained)


def teacher_predictions(config: RunConfig, result: RunResult, teacher: str, set_name: str,
                        task: str) -> dict[str, Any]:  # fmt: skip
    """Frame name -> the teacher's prediction of `task` on `set_name` (test-time transform)."""
    model = build_model(config.model)
    load_into(model, weights(result, teacher), source=teacher)
    model.eval()
    data = config.data.model_copy(update={"sets": {set_name: config.data.sets[set_name]}})
    dataset = build_dataset(data, "train", transform=build_transforms(data.transforms, False))
    out = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            (pred,) = model.predict(collate([dataset[i]], data.size_divisor), [task])
            out[pred.meta.name] = pred
    return out


@pytest.mark.slow
def test_semantic_pseudo_labels_ignore_every_pixel_below_the_confidence(
    config: RunConfig, straight: RunResult
) -> None:
    folder = stage_dir(straight, "pseudo_semantic") / "pseudo_labels"
    for set_name in ("detection", "tracking"):
        preds = teacher_predictions(config, straight, "teacher_semantic", set_name, "semantic")
        kept = ignored = 0
        for name, pred in preds.items():
            png = folder / set_name / "masks" / "semantic" / Path(name).with_suffix(".png")
            written = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
            confident = (pred.semantic_confidence >= SEMANTIC_CONFIDENCE).numpy()
            assert (written[~confident] == 255).all()
            assert (written[confident] == pred.semantic.numpy()[confident]).all()
            kept, ignored = kept + confident.sum(), ignored + (~confident).sum()
        assert kept > 0 and ignored > 0, (set_name, kept, ignored)


@pytest.mark.slow
def test_pose_pseudo_labels_drop_every_joint_below_the_score(
    config: RunConfig, straight: RunResult
) -> None:
    folder = stage_dir(straight, "pseudo_pose") / "pseudo_labels"
    preds = teacher_predictions(config, straight, "teacher_pose", "segmentation", "pose")
    frames = json.loads((folder / "segmentation" / "labels.json").read_text())
    frames = frames["frames"] if isinstance(frames, dict) else frames
    written = dropped = 0
    for frame in frames:
        joints = preds[frame["name"]].poses.keypoints
        expected = int((joints[..., 2] >= JOINT_SCORE).sum())
        nodes = [
            n for label in frame["labels"] for n in (label.get("graph") or {}).get("nodes", [])
        ]
        assert all(n["score"] >= JOINT_SCORE for n in nodes)
        assert len(nodes) == expected
        written, dropped = written + expected, dropped + joints[..., 2].numel() - expected
    assert written > 0 and dropped > 0


@pytest.mark.slow
def test_joint_training_reads_the_pseudo_labels(
    config: RunConfig, straight: RunResult, fed: JointLabels
) -> None:
    pseudo = {("detection", "semantic"), ("tracking", "semantic"), ("segmentation", "pose"),
              ("tracking", "pose")}  # fmt: skip
    units = plan_for_model(config, build_model(config.model), run_dir=straight.out_dir)
    (joint,) = [u for u in units if u.name == "joint"]
    dataset = build_dataset(joint.data, "train")
    samples = (dataset[i] for i in range(len(dataset)))
    assert pseudo <= {(s.meta.image_set, t) for s in samples for t in s.tasks}
    assert pseudo <= fed.seen, str(sorted(fed.seen))  # one batch of each set, in turn


@pytest.mark.slow
def test_per_decoder_fine_tuning_freezes_the_shared_network_and_merges(
    straight: RunResult,
) -> None:
    joint, final = weights(straight, "joint"), load_weights(straight.final_weights)
    assert final.keys() == joint.keys()
    decoders = ("semantic", "detection", "instance", "pose", "mot")
    for key in final:
        owner = next((t for t in decoders if key.startswith(f"heads.{t}.")), None)
        if owner is None:  # shared: backbone, neck (and the parameter-free MOTS)
            assert torch.equal(final[key], joint[key]), key
        else:
            sub = weights(straight, f"decoders.{owner}")
            assert torch.equal(final[key], sub[key]), key
    for task in decoders:
        sub = weights(straight, f"decoders.{task}")
        shared = [k for k in sub if not k.startswith(f"heads.{task}.")]
        assert all(torch.equal(sub[k], joint[k]) for k in shared), task
        own = [k for k in sub if k.startswith(f"heads.{task}.")]
        assert any(not torch.equal(sub[k], joint[k]) for k in own), task


def finished_weights(out: Path) -> dict[Path, int]:
    """Weights file -> modification time of every finished unit of the run in `out`."""
    return {p: p.stat().st_mtime_ns for p in (out / "stages").rglob("weights.safetensors")}


@pytest.mark.slow
def test_a_run_killed_in_joint_and_in_fine_tuning_resumes_without_retraining(
    config: RunConfig, straight: RunResult, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    with pytest.raises(SimulatedKill):
        run_recipe(config, out, progress=False, callbacks=[KillAt("joint", 1)])
    before_joint = finished_weights(out)
    assert len(before_joint) == 6  # curricula, teachers, pseudo-label stages
    L.seed_everything(0)  # resume does not depend on the process's RNG state
    with pytest.raises(SimulatedKill):  # resumed, killed in the fourth decoder's fine-tuning
        run_recipe(config, out, resume=True, progress=False, callbacks=[KillAt("decoders.pose", 1)])
    before_pose = finished_weights(out)
    assert len(before_pose) == 10 and before_joint.items() <= before_pose.items()
    resumed = run_recipe(config, out, resume=True, progress=False)
    assert before_pose.items() <= finished_weights(out).items()  # none of them retrained
    assert [s.name for s in resumed.stages] == [s.name for s in straight.stages]
    for stage in straight.stages:
        same_weights(stage.weights, stage_dir(resumed, stage.name) / "weights.safetensors")
    same_weights(straight.final_weights, resumed.final_weights)
