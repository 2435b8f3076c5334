"""The benchmark scripts at toy size (real MiniLM, a few tiny trials), so they never rot.

Each script's ``main`` runs in this process (imports and the loaded model are shared) into a
temporary folder; the JSON must hold the expected structure and only finite numbers.
"""

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DATASET = ROOT.parent / "shared" / "datasets" / "glue_rte"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DATASET.is_dir(), reason="shared datasets missing")]


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", SCRIPTS / f"bench_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def run(name: str, out: Path, *extra: str) -> tuple[dict, str]:
    script(name).main(["--size", "toy", "--out", str(out), *extra])
    data = json.loads((out / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["size"] == "toy"
    assert all(math.isfinite(v) for v in numbers(data))
    markdown = (out / f"{name}.md").read_text()
    assert markdown.startswith("# ") and "|---|" in markdown and "--size toy" in markdown
    return data, markdown


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("benchmarks")


@pytest.fixture(scope="module")
def search(out):
    return run("search", out)


def test_search(search, out):
    data, markdown = search
    reference = data["reference"]["rte"]
    assert reference["params"] > 1e7 and 0.5 <= reference["metric_value"] <= 1 and reference["scored_examples"] == 16
    assert {(r["sampler"], r["trials"]) for r in data["runs"]} == {("botorch", 2), ("random", 3)}
    for run_ in data["runs"]:
        assert (Path(run_["run_dir"]) / "run.json").is_file()
        assert set(run_["hv_at"]) >= {"1", "2"} and all(v >= 0 for v in run_["hv_at"].values())
        assert [c["trials"] for c in run_["curve"]] == list(range(1, run_["trials"] + 1))
        seconds = [c["seconds"] for c in run_["curve"]]
        assert seconds == sorted(seconds) and seconds[0] > 0
    goal = data["summary"]["goal"]
    assert len(goal) == 1 and goal[0]["holds"] in (True, False)
    assert "## Goal" in markdown and "The goal holds on" in markdown


def test_quality(search, out):
    runs = [r["run_dir"] for r in search[0]["runs"]]
    data, markdown = run("quality", out, "--from-run", *runs)
    methods = {r["method"] for r in data["summary"]}
    assert methods >= {"full", "lora", "pfeiffer", "parallel_adapter", "prefix", "ia3", "bitfit", "mam"}
    assert all(r["status"] == "ok" and r["test"] is not None for r in data["rows"])
    full = next(r for r in data["summary"] if r["method"] == "full")
    lora = next(r for r in data["summary"] if r["method"] == "lora")
    assert full["percent_of_model"] == pytest.approx(100) and lora["adapter_params"] == 73_728
    assert [p["budget_percent"] for p in data["autopeft"]] == [0.1, 1.0]
    for pick in data["autopeft"]:
        if pick["from"] is not None:
            assert pick["params"] <= pick["budget_percent"] / 100 * full["adapter_params"]
    assert "full fine-tuning" in markdown and "autopeft ≤1 %" in markdown


def test_fidelity(out):
    data, markdown = run("fidelity", out)
    (task,) = data["tasks"]
    assert len(task["points"]) == 3 and task["n"] == 3
    assert task["spearman_rho"] is None or -1 <= task["spearman_rho"] <= 1
    assert "Spearman" in markdown


def test_fidelity_over_the_searchs_step_rungs(out):
    """Medium's design at toy size: each point continued rung by rung, evaluated at each."""
    data, markdown = run("fidelity", out, "--rungs", "0.25,0.5", "--space", "default", "--points", "2",
                         "--full-train-examples", "64", "--repeat-seeds", "1")
    (task,) = data["tasks"]
    assert [len(p["rungs"]) for p in task["points"]] == [3, 3]
    # every rung's loss is kept (ranking by it is reported), and each point trained again with another seed
    assert all(r["loss"] > 0 for p in task["points"] for r in p["rungs"])
    assert [[x["seed"] for x in p["repeats"]] for p in task["points"]] == [[1], [1]]
    assert all(a["n_repeated"] == 2 and "spearman_rho_loss" in a for a in task["agreement"])
    assert "full_seed_rho" in task and "full, seed 1" in markdown
    for point in task["points"]:
        steps = [r["steps"] for r in point["rungs"]]
        assert steps == sorted(steps) and [r["resumed_steps"] for r in point["rungs"]] == [0, *steps[:-1]]
    assert [a["fraction"] for a in task["agreement"]] == [0.25, 0.5] and "Rung agreement" in markdown


def test_quality_from_default_searches(out, tmp_path):
    """Medium's design at toy size: one default search per budget (LoRA r8's count), its cost vs LoRA r8."""
    data, markdown = run("quality", out, "--methods", "lora,autopeft", "--default-search", "--budgets", "lora",
                         "--search-trials", "3", "--search-final-seeds", "1", "--runs", str(tmp_path / "runs"))
    (search,) = data["searches"]
    assert search["budget"] == 73_728 and search["cost_vs_lora_r8"] > 0 and search["trivial_on_front"] == 0
    assert search["final_seeds"] == 1 and "final seeds" in markdown
    assert "The searches behind the autopeft rows" in markdown


def test_overhead(out):
    data, markdown = run("overhead", out)
    trials = data["search"]["trials"]
    assert len(trials) == 2
    assert all(t["engine_wall_s"] >= t["runner_wall_s"] >= t["compute_s"] > 0 for t in trials)
    (suggestion,) = data["suggestion"]
    assert suggestion["sampler"] == "random" and set(suggestion["median_by_trial_count"]) == {"3", "6"}
    assert suggestion["trials"] == 6 and 1 <= suggestion["new_points"] <= 6
    assert data["memory"]["peak_process_mb"] >= data["memory"]["rss_after_model_and_task_mb"] > 0
    assert "Suggestion time" in markdown


def test_trial(out):
    data, markdown = run("trial", out)
    assert [t["trial"] for t in data["trials"]] == [1, 2] and data["dev_examples"] == 16
    assert data["full_finetuning"] is None and "overhead ratio" in markdown


def test_lr(out):
    data, markdown = run("lr", out)
    assert {(e["type"], len(e["rates"])) for e in data["summary"]} == {("lora", 2), ("prefix", 2)}
    assert all(e["default_lr"] in [r["lr"] for r in e["rates"]] for e in data["summary"]) and "prefix 30" in markdown


def test_oneshot(out):
    data, markdown = run("oneshot", out, "--inherit")
    (task,) = data["tasks"]
    assert task["inherit"]["n"] == 4 and "Inherited weights" in markdown
    assert len(task["points"]) == 4 and [p["origin"] for p in task["points"][:3]] == [
        "lora", "pfeiffer", "parallel_adapter"]
    assert [len(length["scores"]) for length in task["lengths"]] == [4, 4]
    assert all(length["super_cost_ratio"] > 0 for length in task["lengths"]) and "ρ params" in markdown
    assert f"Made on 2 CPU cores by `{task['command']}`" in markdown and task["seconds"] > 0


def test_oneshot_search_comparison(out, tmp_path):
    data, markdown = run("oneshot", out, "--compare-search", "--default-trials", "2", "--oneshot-trials", "2",
                         "--screen-evaluations", "3", "--screen-candidates", "1", "--search-seeds", "1",
                         "--runs", str(tmp_path / "runs"))
    (task,) = data["search_comparison"]
    default, screened, inheriting = task["searches"]
    assert [s["arm"] for s in task["searches"]] == ["default", "oneshot", "oneshot-inherit"]
    assert default["budget"] == screened["budget"] == 73_728 and screened["cost_vs_lora_r8"] > 0
    assert [a["searches"] for a in task["summary"]] == [1, 1, 1] and "Search efficiency" in markdown
    assert "| oneshot-inherit | 1 |" in markdown and "--compare-search" in task["command"]


def test_oneshot_subset_agreement(out):
    data, markdown = run("oneshot", out, "--subset-agreement", "--subset-sizes", "4,8,99", "--points", "5",
                         "--screen-candidates", "2", "--search-seeds", "1")
    (task,) = data["subset_agreement"]
    assert [r["examples"] for r in task["sizes"]] == [4, 8, 16]   # 99 is more than the 16 scored: all of them
    whole = task["sizes"][-1]   # the ranking on all examples against itself
    assert whole["loss_vs_all"]["spearman"] == pytest.approx(1.0) and whole["top_kept"] == 2
    assert all(len(scores) == task["points"] == 5 for scores in task["scores"].values())
    assert all(0 < r["score_share_of_trial"] < 1 for r in task["sizes"]) and "best kept" in markdown
    assert markdown.count(task["command"]) == 2   # one "Made ... by" line naming it once, then "Reproduce"


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("bench_*.py")), ids=lambda path: path.stem)
def test_every_script_has_size_presets_and_main(path, capsys):
    module = script(path.stem.removeprefix("bench_"))
    assert {"toy", "quick"} <= set(module.PRESETS)
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0 and "--size" in capsys.readouterr().out


def test_until_study_size_stops_the_search_at_that_many_trials(tmp_path):
    from autopeft.models import load_model_config
    from autopeft.search import SearchEngine, SearchPlan, open_storage, parse_objectives
    from autopeft.space import SearchSpace
    from autopeft.trial.fidelity import Fidelity
    from autopeft.trial.result import TrialResult

    space = SearchSpace.from_file(ROOT / "search_spaces" / "autopeft.yaml", load_model_config("minilm"))
    storage = open_storage(f"sqlite:///{tmp_path}/study.db")
    plan = SearchPlan(objectives=parse_objectives(["metric", "params"], "accuracy", True), rungs=[Fidelity()],
                      trials=50, sampler="random", final_seeds=0, baselines=False, quasi_random=2)
    backend = script("overhead").UntilStudySize(lambda *a, **k: TrialResult(metrics={"accuracy": 0.5}), 7)
    engine = SearchEngine(space, None, plan, storage, "bench", tmp_path, backend=backend)
    engine.run()
    assert len(engine.studies[0].trials) == 7


def test_toy_needs_its_own_folder():
    with pytest.raises(SystemExit):
        script("fidelity").main(["--size", "toy"])


def test_quality_reuses_rows_only_of_a_run_that_trained_the_same_way(tmp_path):
    """``--reuse full,pfeiffer``: those rows (and full fine-tuning's sweep) come from the earlier JSON, or nothing
    does: a different training, a missing seed or a method a change could move is refused."""
    import argparse

    quality = script("quality")
    training = dict(train_examples="16", epochs=1.0, max_length=16, eval_examples=16, batch_size=8, seeds=2,
                    full_ft_lrs="1e-4,2e-4", full_ft_lr=5e-5, lr=None)
    rows = [{"task": "rte", "method": m, "seed": s, "label": m, "commit": "abc1234"}
            for m in ("full", "pfeiffer", "lora") for s in (0, 1)]
    earlier = {"size": "toy", "settings": training, "rows": rows,
               "full_ft_sweep": [{"task": "rte", "lr": 2e-4, "validation": 0.6}],
               "per_task": [{"task": "rte", "full_ft_lr": 2e-4}]}
    (tmp_path / "quality.json").write_text(json.dumps(earlier))
    args = argparse.Namespace(size="toy", out=tmp_path, reuse="full,pfeiffer", **training)
    reused, extra = quality.reused_rows(args, "rte")
    assert sorted((r["method"], r["seed"]) for r in reused) == [("full", 0), ("full", 1), ("pfeiffer", 0),
                                                                ("pfeiffer", 1)]
    assert all(r["reused"] and r["commit"] == "abc1234" for r in reused) and extra["full_ft_lr"] == 2e-4
    assert quality.reused_rows(argparse.Namespace(**{**vars(args), "reuse": None}), "rte") == ([], {})
    for change, message in [({"epochs": 2.0}, "trained differently \\(epochs\\)"), ({"seeds": 3}, "\\(seeds\\)"),
                            ({"reuse": "lora"}, "cannot be reused")]:
        with pytest.raises(SystemExit, match=message):
            quality.reused_rows(argparse.Namespace(**{**vars(args), **change}), "rte")
    (tmp_path / "quality.json").write_text(json.dumps({**earlier, "rows": rows[:-3]}))   # pfeiffer seed 1 lost
    with pytest.raises(SystemExit, match="lacks rte's pfeiffer rows for 2 seeds"):
        quality.reused_rows(args, "rte")


def test_lofit_tables_render_again_from_their_json(tmp_path, capsys):
    """``bench_lofit.py --render JSON``: the decoder and encoder tables (trivial seeds counted, where the K heads sit)
    come back from a saved run alone, with the command that made it."""
    lofit = script("lofit")
    rows = [{"task": "minilm:trec", "method": f"{method} K=7", "seed": seed, "status": "ok", "adapter_params": 224,
             "trivial": seed == 0 and method == "lofit-random", "accuracy": 0.5 + 0.1 * seed, "eval_loss": 1.0,
             "macro_f1": 0.4} for method in ("lofit-learned", "lofit-random") for seed in range(2)]
    step1 = {"minilm:trec": {"seconds": 1.0, "cached": False, "k": [7], "top_k": {"7": {"5": [0, 1], "4": [3]}},
                             "layer_mean_norm": [0.1, 0.2], "probed_top_k": {"7": {"0": [1]}},
                             "probed_layer_mean_norm": [0.3, 0.1]}}
    for size, verbalize in (("encoder", False), ("decoder", True)):
        settings = {**lofit.PRESETS[size], "size": size, "verbalize": verbalize, "probe_epochs": 1, "l1": 5e-4,
                    "select_lr": 5e-3, "argv": ["--size", size], "name": f"lofit-{size}", "script": "lofit"}
        if verbalize:
            step1["minilm:trec"] |= {"untrained": {"accuracy": 0.3}, "trivial": {"accuracy": 0.25, "stderr": 0.02}}
        path = tmp_path / f"lofit-{size}.json"
        path.write_text(json.dumps({"settings": settings, "seconds": 12.0, "machine": {"cpu_count": 2, "torch": "x"},
                                    "rows": rows, "step1": step1}))
        lofit.main(["--render", str(path)])
        text = path.with_suffix(".md").read_text()
        assert "| minilm:trec | lofit-random K=7 | 224 | 0.5500 ± 0.0500 |" in text and "| 1/2 |" in text
        assert f"Reproduce: `python scripts/bench_lofit.py --size {size}`" in text
    assert "learned: L5: 1, L6: 2" in (tmp_path / "lofit-encoder.md").read_text()
    assert "probed: L1: 1" in (tmp_path / "lofit-encoder.md").read_text()
    assert "majority class 0.2500" in (tmp_path / "lofit-decoder.md").read_text()
