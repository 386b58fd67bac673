"""Step time of the demo model, this tree against a baseline checkout (stage-graph refactor check).

Measures, for the demo model (the `model` section of `src/drivemtl/resources/demo.yaml`, each tree
reading its own file, so old `name:` and new `type:` spellings both load):

* train step: `zero_grad`, `sum(model.losses(batch).values()).backward()`, `torch.optim.AdamW`
  step, in train mode;
* inference: `model.predict(batch)` in eval mode;

on one fixed batch (default 2 frames at 192x320, fp32, CPU, 2 threads) of synthetic frames
carrying every image-task label the demo trains (preset `all`), so every head and its loss runs.
The frames are generated once into a temporary folder and both trees build their batch from it
with `build_dataset` / `build_transforms` (eval transforms, no augmentation) / `collate`. Every
tree starts from the same weights: one state dict is initialised (seeded) by this tree and
loaded by name into each side's model (the refactor reordered the modules, so a seed alone
would not give equal weights); sides whose parameter names differ fall back to their own seeded
init and say so.

Each side runs in its own worker subprocess with `PYTHONPATH=<tree>/src`, so it imports that
tree's code (the worker checks it did). Every round starts a fresh old and a fresh new worker
(per-process effects such as memory layout vary from process to process); each seeds torch,
warms up and then, taking turns with the other side (`--blocks` alternations a round, order
flipped each time), times `--steps` steps of inference, then of training. The table gives per
side the median over rounds of the round's per-step median, and new/old of those; as cross-checks
the round-by-round (paired) ratios, the ratio of the fastest steps (10th percentile), and the
ratio over "quiet" rounds only.

Other processes on a small machine distort step times badly (2 threads on 2 cores slow down many
times over while anything else runs), so the driver measures, from /proc/stat, the CPU time used
by anything but the worker during each block: before a round it waits (at most `--max-wait` s in
all) for a quiet machine, and a block during which other processes used `--quiet` cores or more
is redone (at most `--redo` blocks in all). It also counts, once and untimed, the work of one
step on each side (aten operators via torch.profiler, Python calls via cProfile): equal work with
different times means machine noise, not code.

    python benchmarks/stage_graph_speed.py --baseline /path/to/old/checkout
    python benchmarks/stage_graph_speed.py                # this tree only
    python benchmarks/stage_graph_speed.py --baseline ../old --rounds 15   # tighter figures

The default run (5 rounds x 2 blocks x 4 timed steps per side and phase) takes about 2 minutes
on an otherwise idle 2-core machine, up to about 4 with waits and redone blocks. Step times on
such a machine vary by 10 % or more between processes and runs, so a 5 % claim needs repeated
runs or more `--rounds`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
THIS_TREE = HERE.parents[1]
DEMO_YAML = Path("src/drivemtl/resources/demo.yaml")
RESULT_PREFIX = "STAGE_GRAPH_SPEED_RESULT "


# ------------------------------------------------------------------------------ worker side
# Everything from here to the driver side runs in a worker subprocess whose PYTHONPATH is one
# tree's `src`, and must only use APIs that exist in every tree compared (old and new).


def _load_model_config(tree: Path, scratch: Path):
    """The model section of `tree`'s demo.yaml, validated by that tree's run-config loader: new
    trees have `engine.run_config.load_run_config`, old ones `drivemtl.config.load_config(path)`
    with the run config as default schema. Only the `model` section is kept (written to a file
    in `scratch`), so a recipe / train section in flux does not stop the measurement."""
    import yaml

    raw = yaml.safe_load((tree / DEMO_YAML).read_text(encoding="utf-8"))
    path = scratch / f"demo_model_{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump({"model": raw["model"]}, sort_keys=False), encoding="utf-8")
    try:
        from drivemtl.engine.run_config import load_run_config
    except ImportError:
        from drivemtl.config import load_config

        return load_config(path).model
    return load_run_config(path).model


def _build_batch(data_root: Path, tasks: list[str], size_wh: tuple[int, int], batch: int):
    from drivemtl.data import DataConfig, build_dataset, build_transforms
    from drivemtl.structures.batch import collate

    data = DataConfig.model_validate(
        {
            "sets": {"all": {"root": str(data_root), "tasks": tasks}},
            "transforms": {"heights": [size_wh[1]], "test_height": size_wh[1]},
        }
    )
    dataset = build_dataset(data, "train", transform=build_transforms(data.transforms, False))
    if len(dataset) < batch:
        raise SystemExit(f"{data_root}: {len(dataset)} frames, need {batch}")
    return collate([dataset[i] for i in range(batch)], data.size_divisor)


def _count(value) -> int:
    if value is None:
        return 0
    try:
        return len(value)
    except TypeError:
        return 0


def _timed(fn, warmup: int, steps: int) -> list[float]:
    """Wall-clock seconds of each of `steps` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    wall = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - start)
    return wall


def _work(fn, seed: int) -> dict:
    """The work of one call of `fn`, independent of machine load: the aten operators it runs
    (torch.profiler, name -> count) and the Python function calls it makes (cProfile)."""
    import cProfile
    import pstats

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(seed)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = {e.key: e.count for e in prof.key_averages() if e.key.startswith("aten::")}
    torch.manual_seed(seed)
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    return {"ops": ops, "python_calls": pstats.Stats(profiler).total_calls}


def _reply(payload: dict) -> None:
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


def worker_prepare(spec: dict) -> None:
    """Generate the synthetic frames and the shared initial weights (run in this tree)."""
    import torch

    from drivemtl.data.synthetic.generator import generate_dataset
    from drivemtl.models import build_model

    out = Path(spec["out"])
    root = generate_dataset(
        out / "syn", preset="all", num_frames=spec["frames"], size=tuple(spec["size"]),
        seed=spec["seed"], progress=False,
    )  # fmt: skip
    cfg = _load_model_config(Path(spec["tree"]), out)
    torch.manual_seed(spec["seed"])
    model = build_model(cfg)
    torch.save(model.state_dict(), out / "weights.pt")
    _reply({"data_root": str(root / "all"), "weights": str(out / "weights.pt")})


def worker_serve(spec: dict) -> None:
    """Set up this tree's demo model and batch, then time blocks of steps on request.

    Requests (one JSON line each on stdin): {"cmd": "infer" | "train", "warmup": w, "steps": n}
    answers the `n` step times after `w` untimed steps; {"cmd": "quit"} ends the worker.
    """
    import torch

    import drivemtl
    from drivemtl.models import build_model

    tree = Path(spec["tree"])
    imported = Path(drivemtl.__file__).resolve()
    if (tree / "src").resolve() not in imported.parents:
        raise SystemExit(f"imported {imported}, expected code under {tree / 'src'}")
    torch.set_num_threads(spec["threads"])
    seed = spec["seed"]
    cfg = _load_model_config(tree, Path(spec["out"]))
    tasks = list(cfg.tasks)
    batch = _build_batch(Path(spec["data_root"]), tasks, tuple(spec["size"]), spec["batch"])
    torch.manual_seed(seed)
    model = build_model(cfg)
    shared = torch.load(spec["weights"], map_location="cpu")
    own = {k: v.clone() for k, v in model.state_dict().items()}
    same_weights = set(shared) == set(own) and all(shared[k].shape == own[k].shape for k in own)
    if same_weights:
        model.load_state_dict(shared)
    initial = shared if same_weights else own
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=1e-4)

    def infer() -> None:
        model.predict(batch)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(model.losses(batch).values()).backward()
        optimizer.step()

    # What each side computes on the shared initial weights, to check both ran the same thing;
    # the weights are loaded again afterwards (train mode moves the BN statistics, steps the
    # weights).
    model.eval()
    torch.manual_seed(seed)
    predictions = model.predict(batch)
    model.train()
    torch.manual_seed(seed)
    first_losses = {k: float(v.detach()) for k, v in model.losses(batch).items()}
    work = {}
    if spec.get("count_work"):
        for name, fn, training in (("inference", infer, False), ("train step", train, True)):
            model.load_state_dict(initial)
            model.train(training)
            work[name] = _work(fn, seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=1e-4)
    model.load_state_dict(initial)
    _reply(
        {
            "tasks": tasks,
            "shared_weights": same_weights,
            "params": sum(p.numel() for p in model.parameters()),
            "image_shape": list(batch.images.shape),
            "image_sum": float(batch.images.double().sum()),
            "labeled": {t: int(batch.is_labeled(t).sum()) for t in tasks},
            "first_losses": first_losses,
            "predicted": {
                key: sum(_count(getattr(p, key, None)) for p in predictions)
                for key in ("detections", "instances", "poses")
            },
            "work": work,
        }
    )

    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        model.train(request["cmd"] == "train")
        fn = train if request["cmd"] == "train" else infer
        torch.manual_seed(seed)
        start_cpu = time.process_time()  # all threads; the driver subtracts it from busy time
        wall = _timed(fn, request["warmup"], request["steps"])
        _reply({"wall": wall, "request_cpu": time.process_time() - start_cpu})


def _worker(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    {"prepare": worker_prepare, "serve": worker_serve}[spec["job"]](spec)


# ------------------------------------------------------------------------------ driver side


class Side:
    """One tree's worker subprocess (PYTHONPATH=<tree>/src), answering one JSON line a request."""

    def __init__(self, tree: Path, spec: dict, log: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(tree / "src")
        env["OMP_NUM_THREADS"] = str(spec["threads"])
        self.tree, self.job, self.log = tree, spec["job"], log
        self._stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--worker", json.dumps({**spec, "tree": str(tree)})],
            env=env, cwd=str(tree), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True,
        )  # fmt: skip

    def read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX) :])
        self.proc.wait()
        self._stderr.flush()
        sys.stderr.write(self.log.read_text()[-8000:])
        raise SystemExit(f"{self.job} worker in {self.tree} failed (exit {self.proc.returncode})")

    def ask(self, request: dict) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def _p10(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[0] if len(values) > 1 else values[0]


def _busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat); None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _block(worker: Side, request: dict) -> tuple[list[float], float]:
    """One block of steps on `worker`: the step seconds, and the cores other processes used
    meanwhile (the machine's busy CPU time less the worker's own, over the block's wall time)."""
    busy, wall = _busy_cpu_s(), time.perf_counter()
    answer = worker.ask(request)
    wall = time.perf_counter() - wall
    after = _busy_cpu_s()
    if busy is None or after is None:
        return answer["wall"], 0.0
    return answer["wall"], max(0.0, (after - busy - answer["request_cpu"]) / wall)


def _wait_quiet(max_wait: float, threshold: float) -> float:
    """Wait (at most `max_wait` s) until other processes use under `threshold` cores over half a
    second (the workers are idle meanwhile, so all busy time is someone else's); seconds waited."""
    start = time.perf_counter()
    while True:
        before = _busy_cpu_s()
        if before is None:
            return 0.0
        time.sleep(0.5)
        after = _busy_cpu_s()
        waited = time.perf_counter() - start
        if after is None or (after - before) / 0.5 < threshold or waited >= max_wait:
            return waited


def _describe(tree: Path) -> str:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=False
        )
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or tree.name  # a plain copy: its folder
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return commit + ("+dirty" if dirty else "")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, default=None, help="older checkout to compare")
    parser.add_argument("--rounds", type=int, default=5, help="fresh worker pairs, one a round")
    parser.add_argument("--blocks", type=int, default=2, help="old/new alternations per round")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side and block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before a round")
    parser.add_argument("--block-warmup", type=int, default=1, help="untimed steps, later blocks")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", default="320x192", help="WxH of the frames (demo: 320x192)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4, help="frames to synthesise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument(
        "--quiet", type=float, default=0.2,
        help="other processes' load (cores) under which the machine counts as quiet",
    )  # fmt: skip
    parser.add_argument(
        "--max-wait", type=float, default=30.0,
        help="seconds in all to wait for a quiet machine (0: never wait)",
    )  # fmt: skip
    parser.add_argument(
        "--redo", type=int, default=6,
        help="blocks in all that may be redone because other processes ran meanwhile",
    )  # fmt: skip
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    sides = {"new": THIS_TREE}
    if args.baseline is not None:
        baseline = args.baseline.resolve()
        if not (baseline / DEMO_YAML).is_file():
            parser.error(f"{baseline}: no {DEMO_YAML} (not a DriveMTL checkout?)")
        sides = {"old": baseline, "new": THIS_TREE}
    order = list(sides)
    labels = {side: f"{side} ({_describe(tree)})" for side, tree in sides.items()}
    phases = {"train step": "train", "inference": "infer"}

    start = time.perf_counter()
    # phase -> side -> round -> step seconds, and the other processes' load (cores) per block
    steps: dict[str, dict[str, list[list[float]]]] = {p: {s: [] for s in sides} for p in phases}
    others: dict[str, dict[str, list[list[float]]]] = {p: {s: [] for s in sides} for p in phases}
    waited, redone = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="stage_graph_speed_") as tmp:
        common = {"seed": args.seed, "size": [width, height], "threads": args.threads, "out": tmp}
        prep = Side(THIS_TREE, {**common, "job": "prepare", "frames": args.frames}, Path(tmp) / "p")
        prepared = prep.read()
        prep.close()
        spec = {**common, **prepared, "job": "serve", "batch": args.batch, "lr": args.lr}
        for r in range(args.rounds):
            round_spec = {**spec, "count_work": r == 0}
            workers = {
                side: Side(tree, round_spec, Path(tmp) / f"{side}.log")
                for side, tree in sides.items()
            }
            try:
                answers = {side: worker.read() for side, worker in workers.items()}
                if r == 0:
                    info = answers
                waited += _wait_quiet(max(0.0, args.max_wait - waited), args.quiet)
                # Inference first: on the shared initial weights, which training then changes.
                for phase in ("inference", "train step"):
                    for side in sides:
                        steps[phase][side].append([])
                        others[phase][side].append([])
                    for b in range(args.blocks):
                        for side in order if (r + b) % 2 == 0 else order[::-1]:
                            warmup = args.warmup if b == 0 else args.block_warmup
                            while True:
                                request = {
                                    "cmd": phases[phase], "warmup": warmup, "steps": args.steps
                                }  # fmt: skip
                                times, load = _block(workers[side], request)
                                if load < args.quiet or redone >= args.redo:
                                    break
                                # Someone else took the cores meanwhile: wait, then redo the block.
                                redone += 1
                                waited += _wait_quiet(max(0.0, args.max_wait - waited), args.quiet)
                                warmup = max(1, args.block_warmup)
                            steps[phase][side][-1].extend(times)
                            others[phase][side][-1].append(load)
                    medians = "  ".join(
                        f"{side} {1000 * statistics.median(steps[phase][side][-1]):.1f} ms "
                        f"(other load {max(others[phase][side][-1]):.2f} cores)"
                        for side in order
                    )
                    print(
                        f"  round {r + 1}/{args.rounds} {phase}: {medians}",
                        file=sys.stderr, flush=True,
                    )  # fmt: skip
            finally:
                for worker in workers.values():
                    worker.close()
    elapsed = time.perf_counter() - start

    first = info[order[0]]
    print(
        f"demo model ({len(first['tasks'])} tasks: {', '.join(first['tasks'])}), "
        f"{first['params']:,} params; batch {args.batch} x {width}x{height}, fp32, CPU, "
        f"{args.threads} threads"
    )
    print(
        f"{args.rounds} rounds (fresh workers each) x {args.blocks} alternating "
        f"blocks x {args.steps} timed steps per side and phase ({args.warmup} warm-up steps "
        f"before a round's first block, {args.block_warmup} before later ones); "
        f"{elapsed:.0f} s in all, {waited:.0f} s of it waiting for a quiet machine, {redone} "
        "blocks redone because other processes ran meanwhile"
    )
    print("ms: median over rounds of each round's per-step median [min-max of the round medians]")
    if "old" in sides:
        print(
            "paired: each round's new/old, median [min-max]; p10: new/old of the 10th percentile"
            " of all timed steps; quiet: new/old over the rounds in which other processes used"
            f" < {args.quiet:g} cores during both sides' steps (how many)"
        )
    cols = {side: f"{labels[side]} ms" for side in sides}
    width_col = max(22, *(len(v) for v in cols.values()))
    header = f"{'phase':12}" + "".join(f" | {cols[s]:>{width_col}}" for s in sides)
    if "old" in sides:
        header += f" | new/old | {'paired [min-max]':>21} | {'p10':>5} | {'quiet':>12}"
    print(header)
    print("-" * len(header))
    ratios: dict[str, float] = {}
    quiet_ratios: dict[str, tuple[float, int]] = {}
    for phase in phases:
        row = f"{phase:12}"
        rounds = {s: [1000 * statistics.median(t) for t in steps[phase][s]] for s in sides}
        for side in sides:
            cell = (
                f"{statistics.median(rounds[side]):.1f} "
                f"[{min(rounds[side]):.1f}-{max(rounds[side]):.1f}]"
            )
            row += f" | {cell:>{width_col}}"
        if "old" in sides:
            ratios[phase] = statistics.median(rounds["new"]) / statistics.median(rounds["old"])
            paired = [n / o for n, o in zip(rounds["new"], rounds["old"], strict=True)]
            cell = f"{statistics.median(paired):.3f} [{min(paired):.3f}-{max(paired):.3f}]"
            p10 = {s: _p10([t for block in steps[phase][s] for t in block]) for s in sides}
            quiet = [
                i for i in range(args.rounds)
                if max(max(others[phase][s][i]) for s in sides) < args.quiet
            ]  # fmt: skip
            quiet_cell = "-"
            if quiet:
                quiet_ratios[phase] = (
                    statistics.median(rounds["new"][i] for i in quiet)
                    / statistics.median(rounds["old"][i] for i in quiet),
                    len(quiet),
                )
                quiet_cell = f"{quiet_ratios[phase][0]:.3f} ({len(quiet)}/{args.rounds})"
            row += (
                f" | {ratios[phase]:7.3f} | {cell:>21} | {p10['new'] / p10['old']:5.3f}"
                f" | {quiet_cell:>12}"
            )
        print(row)
    loads = [v for p in others.values() for s in p.values() for block in s for v in block]
    print(
        f"other processes' load while timing: median {statistics.median(loads):.2f} cores, "
        f"max {max(loads):.2f} (of {os.cpu_count()})"
    )

    # Sanity: both sides ran the same batch, the same weights and every head.
    for side in sides:
        r = info[side]
        labelled = sorted(set(r["labeled"].values()))
        labelled_text = (
            f"every task labelled on {labelled[0]}/{args.batch} frames"
            if len(labelled) == 1
            else f"labelled {r['labeled']}"
        )
        losses = ", ".join(f"{k} {v:.4g}" for k, v in r["first_losses"].items())
        print(
            f"{side}: shared weights {r['shared_weights']}, batch {tuple(r['image_shape'])} "
            f"sum {r['image_sum']:.6g}, {labelled_text}, predicted {r['predicted']}"
        )
        print(f"{side}: initial losses: {losses}")
    for phase in phases:
        work = {side: info[side]["work"][phase] for side in sides}
        counts = ", ".join(
            f"{side} {sum(w['ops'].values())} aten ops / {w['python_calls']} Python calls"
            for side, w in work.items()
        )
        same = ""
        if "old" in sides:
            diff = sorted(
                (op, work["old"]["ops"].get(op, 0), work["new"]["ops"].get(op, 0))
                for op in set(work["old"]["ops"]) | set(work["new"]["ops"])
                if work["old"]["ops"].get(op, 0) != work["new"]["ops"].get(op, 0)
            )
            same = (
                "; same aten op counts"
                if not diff
                else "; aten op counts differ: "
                + ", ".join(f"{op} {o}->{n}" for op, o, n in diff[:8])
            )
        print(f"work per {phase} (untimed, profiled once): {counts}{same}")
    if "old" in sides:

        def verdict(ratio: float) -> str:
            ok = "within 5 %" if ratio <= 1.05 else "SLOWER by more than 5 %"
            return f"{100 * (ratio - 1):+.1f} % ({ok})"

        print("new vs old: " + "; ".join(f"{p} {verdict(ratios[p])}" for p in phases))
        if quiet_ratios:
            print(
                "quiet rounds only: "
                + "; ".join(
                    f"{p} {verdict(q)} over {n} rounds" for p, (q, n) in quiet_ratios.items()
                )
            )


if __name__ == "__main__":
    main()
