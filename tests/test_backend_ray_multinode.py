"""The Ray backend on a two-node Ray cluster on this machine: a head (``ray start --head``) and a worker
node joining it (``ray start --address``), each with its own temp dir, one CPU and a custom resource.
A search's trials run on both nodes; the worker node is killed (all its processes, SIGKILL) while it
trains a trial; Tune restarts that trial on the head, the final stage's adapters come back, and the
Optuna storage holds every configuration once.

Which node ran a trial comes from the node id the backend reports to Tune (``NODE_KEY``, in each
trial's ``result.json`` under ``--ray-storage``): both nodes have the same IP and hostname here. The
Tune records are matched to the Optuna trials by their TrialResult.

Two nodes of one machine share its CPUs, and Tune reuses a trial's actor for the next pending trial
(``reuse_actors``): a node whose first actor is slow to start (importing torch on a loaded machine)
can be left without any trial, as the head's actor takes them one after the other. So the test holds
the head's CPU (a task of another Ray job) until the first trial has finished, which is then the
worker node's, and releases it then: the head starts its own actor while the worker node trains its
second trial, which is when the node is killed.

``ray stop`` stops every Ray process of the machine (it matches process names; it has no node or
temp dir filter), so it cannot kill one node, and in a teardown it would stop other Ray clusters of
this machine too: each node runs under ``ray start --block`` as a child of this test instead, and
killing that process tree stops exactly that node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import optuna
import psutil
import pytest

from autopeft.backends.ray import NODE_KEY, RESULT_KEY
from autopeft.search import records as R
from autopeft.search.run import read_run_info, run_search
from autopeft.search.settings import merge_settings
from tests.search_helpers import LORA_SPACE, write_tiny_model, write_tiny_task

os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's secure default, as in test_backend_ray.py
ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)
RAY = shutil.which("ray")
TRIALS = 4
STARTED = "Ray runtime started."
TRAINING = "ray::ImplicitFunc.train"  # the title of a Tune trial's process while it runs the trial
# the GCS declares a silent node dead after period x threshold (defaults: 3 s x 5, each after a 10 s timeout)
FAST_NODE_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                   "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "5"}
# another Ray job: one task holds the head's CPU from when it writes argv[2] until argv[3] exists
HOLD_HEAD_CPU = """
import os, sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")

@ray.remote(num_cpus=1, resources={"test_head": 1})
def hold(started, release):
    open(started, "w").close()
    while not os.path.exists(release):
        time.sleep(0.05)

ray.get(hold.remote(sys.argv[2], sys.argv[3]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, what: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while not condition():
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            detail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} failed or timed out\n{detail}")
        time.sleep(0.1)


class Node:
    """One ``ray start --block`` child process and everything it started."""

    def __init__(self, name: str, args: list[str], temp_dir: Path, env: dict[str, str]):
        self.name, self.temp_dir = name, temp_dir
        temp_dir.mkdir(parents=True)
        self.log = temp_dir.parent / f"{name}.log"
        with open(self.log, "w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [RAY, "start", "--block", "--temp-dir", str(temp_dir), "--num-cpus", "1",
                 "--resources", json.dumps({f"test_{name}": 1}), "--object-store-memory", str(100 * 2**20),
                 "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats", *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.node_id: str | None = None

    def wait_started(self, timeout: float = 120) -> None:
        _wait_for(lambda: STARTED in self.log.read_text(), f"ray start of the {self.name} node", timeout,
                  self.process, self.log)
        raylets = [args for args in self.command_lines() if args and Path(args[0]).name == "raylet"]
        assert len(raylets) == 1, f"{self.name}: raylets {raylets}"
        self.node_id = next(a.split("=", 1)[1] for a in raylets[0] if a.startswith("--node_id="))

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def command_lines(self) -> list[list[str]]:
        lines = []
        for process in self.processes():
            try:
                lines.append(process.cmdline())
            except psutil.Error:  # ended meanwhile
                continue
        return lines

    def training(self) -> bool:
        """A Tune trial runs on this node now."""
        return any(" ".join(args).startswith(TRAINING) for args in self.command_lines())

    def kill(self) -> None:
        """SIGKILL the node's processes (ray start, raylet, its workers and agents) at once."""
        processes = self.processes()  # listed before anything dies: orphaned workers are killed too
        if self.process.poll() is None:  # not reaped: its pid is still its session's process group
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(processes, timeout=30)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a worker node, one CPU each, with the custom resources ``test_head`` / ``test_worker``;
    the head's CPU is held by another job until the fixture's ``release`` file is written."""
    root = Path(tempfile.mkdtemp(prefix="apt-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
           **FAST_NODE_DEATH}
    subprocess.run([RAY, "get-auth-token", "--generate"], capture_output=True, timeout=60)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[Node] = []
    holder = None
    try:
        nodes.append(Node("head", ["--head", "--port", str(port), "--include-dashboard", "false",
                                   "--dashboard-port", str(_free_port()),
                                   "--ray-client-server-port", str(_free_port())], root / "head", env))
        # started together: the worker's ray start waits for the head's GCS
        nodes.append(Node("worker", ["--address", address], root / "worker", env))
        nodes[0].wait_started()
        held, release = root / "held", root / "release"
        with open(root / "holder.log", "w") as log:
            holder = subprocess.Popen([sys.executable, "-c", HOLD_HEAD_CPU, address, str(held), str(release)],
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
        nodes[1].wait_started()
        _wait_for(held.exists, "holding the head's CPU", 120, holder, root / "holder.log")
        assert nodes[0].node_id != nodes[1].node_id
        yield {"address": address, "head": nodes[0], "worker": nodes[1], "release": release}
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
        for node in reversed(nodes):
            node.kill()
        leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(root) in " ".join(p.info["cmdline"] or [])]
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"Ray processes of the test cluster survived: {leftovers}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-inputs")
    space = root / "space.yaml"
    space.write_text(LORA_SPACE)
    return {"model": write_tiny_model(root / "model"), "dataset": write_tiny_task(root / "task"), "space": str(space)}


class _FirstTrial:
    """A search observer: set once a trial has been trained and stored."""

    def __init__(self):
        self.done = threading.Event()

    def on_note(self, message: str) -> None:
        pass

    def on_trial(self, record, progress) -> None:
        if record.trained:
            self.done.set()


def _kill_during_second_trial(cluster: dict, first: _FirstTrial, stop: threading.Event, killed: dict) -> None:
    """After the first trial (the worker node's: the head's CPU is held), free the head; kill the worker
    node once it trains again, a little into that trial."""
    worker = cluster["worker"]
    while not stop.is_set() and not first.done.wait(0.1):
        pass
    if stop.is_set():
        return
    cluster["release"].touch()
    while not stop.is_set():
        if worker.training():
            time.sleep(0.3)
            if worker.training():  # into the trial, not in the moment Tune collects the last one's end
                killed["at"] = time.time()
                worker.kill()
                return
        time.sleep(0.05)


def _tune_results(experiment: Path) -> dict[str, dict]:
    """Tune trial folder name -> the result it reported (result.json holds one JSON line per report)."""
    results = {}
    for path in experiment.glob("*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert len(lines) == 1, f"{path}: {len(lines)} reports"
        results[path.parent.name] = json.loads(lines[0])
    return results


def _study(run_dir: Path, name: str):
    return optuna.load_study(study_name=name, storage=read_run_info(run_dir).open_storage())


def test_a_worker_node_killed_mid_trial_its_trial_reruns_on_the_head(two_nodes, inputs, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if ray.is_initialized():  # a connection left by another test would be used instead of ray_address
        ray.shutdown()
    head, worker = two_nodes["head"], two_nodes["worker"]
    storage, out = tmp_path / "shared-ray", tmp_path / "run"
    settings = merge_settings({}, dict(
        inputs, trials=TRIALS, sampler="random", baselines=False, quasi_random=0, final_seeds=1, max_length=32,
        batch_size=16, seed=3, epochs=60, backend="ray", ray_address=two_nodes["address"], cpus_per_trial=1,
        max_concurrent=2, trial_retries=1, ray_storage=str(storage), out=str(out),
        # one rung of full trials (the kill is timed on them), at a learning rate that takes the toy model off the
        # majority class (a trivial trial is on no front: the final stage would have nothing to train)
        fidelity="1", lr=5e-2))
    first, stop, killed = _FirstTrial(), threading.Event(), {}
    killer = threading.Thread(target=_kill_during_second_trial, args=(two_nodes, first, stop, killed), daemon=True)
    killer.start()
    try:
        outcome, info = run_search(settings, observer=first)
    finally:
        stop.set()
        killer.join(timeout=60)
    assert "at" in killed, "the worker node did not train a second trial: it was not killed"
    assert outcome.stopped_because == "trial budget reached"
    assert not ray.is_initialized()  # the backend disconnected from the cluster

    # the storage: every requested trial trained once and complete, each a different configuration
    search = _study(out, R.rung_study_name(info.study_name, 0))
    trained = [t for t in search.trials if t.user_attrs.get(R.TRAINED)]
    assert len(trained) == TRIALS
    assert [t.state for t in trained] == [optuna.trial.TrialState.COMPLETE] * TRIALS, \
        [t.user_attrs.get(R.REASON) for t in trained]
    assert len({t.user_attrs[R.KEY] for t in trained}) == TRIALS, "a configuration was trained twice"
    assert not [t for t in search.trials if t.state == optuna.trial.TrialState.RUNNING]

    # Tune's records: one per stored trial, with the node that ran it
    [experiment] = storage.glob("search-*")
    tune = _tune_results(experiment)
    stored = sorted(json.dumps(t.user_attrs[R.RESULT], sort_keys=True) for t in trained)
    # the storage keeps the loss curve as the trial's intermediate values, not in its result attribute
    told = [{k: v for k, v in json.loads(r[RESULT_KEY]).items() if k != "train_losses"} for r in tune.values()]
    assert sorted(json.dumps(r, sort_keys=True) for r in told) == stored
    nodes = {name: r[NODE_KEY] for name, r in tune.items()}
    assert sorted(nodes.values()) == sorted([worker.node_id] + [head.node_id] * (TRIALS - 1)), nodes

    # the trial killed with its node failed once and was trained again on the head, after the kill
    failed = [path for path in experiment.glob("*/error.txt")]
    assert len(failed) == 1, failed
    error, retried = failed[0].read_text(), failed[0].parent.name
    assert error.count("Failure #") == 1 and "actor" in error.lower(), error[-2000:]  # the trial's actor was lost
    occurred = datetime.strptime(error.split("occurred at ", 1)[1][:19], "%Y-%m-%d_%H-%M-%S").timestamp()
    assert int(killed["at"]) <= occurred <= killed["at"] + 60, (error, killed)
    assert nodes[retried] == head.node_id
    assert tune[retried]["timestamp"] >= int(killed["at"])

    # the final stage: each Pareto point of the search re-trained once, its adapter in the run folder
    final = _study(out, R.final_study_name(info.study_name)).trials
    assert outcome.front_stage == "final" and outcome.front
    assert len({t.user_attrs[R.KEY] for t in final}) == len(final) >= len(outcome.front)
    assert {r.key for r in outcome.front} <= {t.user_attrs[R.KEY] for t in final}
    for trial in final:
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get(R.REASON)
        assert (out / trial.user_attrs[R.ADAPTER_DIR] / "adapter_model.safetensors").is_file()
    [final_experiment] = storage.glob("final-*")
    assert {r[NODE_KEY] for r in _tune_results(final_experiment).values()} == {head.node_id}
