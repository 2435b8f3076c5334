#!/usr/bin/env python
"""Run ~120 bad inputs through the real ``autopeft`` entry point and tally how each one fails.

Every case is one ``python -m autopeft.cli ...`` subprocess (HF_HUB_OFFLINE=1, its own empty working
folder, a timeout) against a tiny random BERT / Llama and tiny task files made in a temp folder.
A bad input passes when the command exits 2 with one line on stderr (see :func:`classify` and
docs/reliability.md for the exact rule) and leaves nothing behind.

    python scripts/check_bad_inputs.py                    # all cases, 2 at a time, tally + failures
    python scripts/check_bad_inputs.py --only storage     # cases whose name or class contains 'storage'
    python scripts/check_bad_inputs.py --json out.json --markdown docs/reliability.md

Exit code 0 only when every case passes. The classification part of this file imports nothing but the
standard library, so tests can use it without autopeft (tests/test_check_bad_inputs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]

# --- categories -----------------------------------------------------------------------------------

PASS = "exit2-one-line"      # a bad input rejected the way users should see it
OK = "ok"                    # a good input (e.g. --version) that must simply work
TRACEBACK = "traceback"
ACCEPTED = "accepted"        # exit 0 on a bad input
PARTIAL = "partial-output"   # failed, but left files in the case's output paths (or its working folder)
LEAK = "leak"                # a secret of the case appeared in stdout, stderr or a file
TIMEOUT = "timeout"
OTHER = "other"              # another exit code, several lines, stdout chatter, ...
SETUP = "setup-failed"       # a fixture the case needs could not be made
CATEGORIES = (PASS, OK, LEAK, TRACEBACK, ACCEPTED, PARTIAL, TIMEOUT, OTHER, SETUP)
PASSING = (PASS, OK)
GOOD_CLASS = "good input (not counted as bad)"

TRACEBACK_MARK = "Traceback (most recent call last)"
# click's usage error: "Usage: ...", "Try '... --help' for help.", an empty line, "Error: ..."
_CLICK_USAGE = re.compile(r"\AUsage: [^\n]*\n(?:[^\n]+\n)*?Try '[^\n]*' for help\.\n\nError: [^\n]+\Z")


@dataclass(frozen=True)
class Case:
    """One bad (or, with ``expect='ok'``, good) command line."""

    name: str
    klass: str                          # the bad-input class (a row group of the docs table)
    argv: tuple[str, ...]               # after `python -m autopeft.cli`; may name fixtures in the working folder
    forbid: tuple[str, ...] = ()        # paths (relative to the working folder) that must not exist afterwards
    allow: tuple[str, ...] = ()         # new paths that are the command's legitimate record of the failure
    secrets: tuple[str, ...] = ()       # strings that must appear in no output and no file
    expect: str = "error"               # "error": a bad input; "ok": must exit 0 with output on stdout
    copy: tuple[str, ...] = ()          # fixtures copied (not linked) into the working folder: the case may write there
    needs: tuple[str, ...] = ()         # fixtures that must have been made (else: setup-failed)
    timeout: float | None = None        # seconds; default --timeout
    extended: bool = False              # only with --extended (near-duplicates of a default case)
    shown: tuple[str, ...] = ()         # argv as the docs show it ("…" for the cheap defaults); default: argv


@dataclass
class Outcome:
    returncode: int | None              # None: timed out
    stdout: str
    stderr: str
    seconds: float
    left_behind: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)


@dataclass
class Result:
    name: str
    klass: str
    argv: list[str]
    category: str
    passed: bool
    returncode: int | None
    seconds: float
    message: str                        # the line users see (see key_line)
    detail: str = ""
    stderr_first_line: str = ""
    stderr_lines: int = 0
    stdout_lines: int = 0
    left_behind: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    stderr_tail: str = ""               # the last lines, for whoever fixes the case
    stdout_tail: str = ""
    shown: list[str] = field(default_factory=list)


def nonempty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


LATE_CLASSES = ("diverging training",)
"""Bad inputs only training can reveal: the command has already said what it loaded and trained (its progress lines
on stderr, as outside a terminal), so the one ``error:`` line comes last, after them."""


def is_late_one_line_error(stderr: str) -> bool:
    """One ``error:`` line, the last, after progress lines that are neither errors nor a traceback."""
    lines = nonempty_lines(stderr)
    errors = [line for line in lines if line.lower().startswith("error")]
    return bool(lines) and len(errors) == 1 and lines[-1] is errors[0] and TRACEBACK_MARK not in stderr


def is_one_line_error(stderr: str) -> bool:
    """Exactly one non-empty line starting with ``error:``, or click's usage block ending in ``Error: ...``."""
    lines = nonempty_lines(stderr)
    if len(lines) == 1 and lines[0].startswith("error:"):
        return True
    return bool(_CLICK_USAGE.match(stderr.strip("\n").replace("\r\n", "\n")))


def key_line(stdout: str, stderr: str) -> str:
    """The most telling line: a traceback's exception, click's ``Error:`` line, else the first stderr line."""
    lines = nonempty_lines(stderr)
    if TRACEBACK_MARK in stderr:
        after = stderr.split(TRACEBACK_MARK)[-1]
        exception_lines = [line for line in nonempty_lines(after) if not line.startswith((" ", "\t"))]
        return exception_lines[-1].strip() if exception_lines else (lines[-1].strip() if lines else "")
    errors = [line for line in lines if line.startswith(("Error:", "error:"))]
    if errors:
        return errors[-1].strip()
    if lines:
        return lines[0].strip()
    out = nonempty_lines(stdout)
    return ("(stdout) " + out[0].strip()) if out else "(no output)"


def classify(case: Case, outcome: Outcome) -> tuple[str, str]:
    """(category, detail). Order: leak > timeout > traceback > accepted > partial output > one-line or other."""
    if outcome.leaked:
        return LEAK, "secret in " + ", ".join(outcome.leaked)
    if outcome.returncode is None:
        return TIMEOUT, f"no exit after {outcome.seconds:.0f} s"
    text = outcome.stdout + outcome.stderr
    if case.expect == "ok":
        if TRACEBACK_MARK in text:
            return TRACEBACK, "a good input crashed"
        if outcome.returncode == 0 and (outcome.stdout + outcome.stderr).strip():
            return OK, ""
        output = "some" if (outcome.stdout + outcome.stderr).strip() else "none"
        return OTHER, f"good input: exit {outcome.returncode}, output {output}"
    if TRACEBACK_MARK in text:
        return TRACEBACK, f"exit {outcome.returncode}"
    if outcome.returncode == 0:
        return ACCEPTED, "exit 0"
    if outcome.left_behind:
        return PARTIAL, "left " + ", ".join(outcome.left_behind)
    stderr_lines = len(nonempty_lines(outcome.stderr))
    if outcome.returncode == 2 and is_one_line_error(outcome.stderr) and not outcome.stdout.strip():
        return PASS, ""
    if (outcome.returncode == 2 and case.klass in LATE_CLASSES and is_late_one_line_error(outcome.stderr)
            and not outcome.stdout.strip()):
        return PASS, f"after {len(nonempty_lines(outcome.stderr)) - 1} progress line(s)"
    problems = []
    if outcome.returncode != 2:
        problems.append(f"exit {outcome.returncode}")
    if not is_one_line_error(outcome.stderr):
        problems.append(f"{stderr_lines} stderr lines" if stderr_lines != 1 else "stderr line is not 'error: ...'")
    if outcome.stdout.strip():
        problems.append(f"{len(nonempty_lines(outcome.stdout))} stdout lines")
    return OTHER, ", ".join(problems)


# --- running one case -----------------------------------------------------------------------------

def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.is_dir() else set()


def _secret_variants(secrets) -> list[str]:
    variants = []
    for secret in secrets:
        for form in (secret, quote(secret, safe=""), quote(secret)):
            if form not in variants:
                variants.append(form)
    return variants


def _scan_files(folders, variants) -> list[str]:
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 20_000_000:
                continue
            data = path.read_bytes()
            for secret in variants:
                if secret.encode() in data:
                    found.append(f"file {path.relative_to(folder)} ({secret!r})")
                    break
    return found


def run_case(case: Case, workdir: Path, env: dict[str, str], prefix: list[str], timeout: float,
             scan: tuple[Path, ...] = ()) -> Outcome:
    """Run ``prefix + case.argv`` in ``workdir`` (already holding its fixtures) and collect what it left."""
    before = _snapshot(workdir)
    start = time.monotonic()
    # its own session, so a timeout ends the command and whatever it started (e.g. a local Ray), nothing else
    process = subprocess.Popen(prefix + list(case.argv), cwd=workdir, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, errors="replace",
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode = process.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = process.communicate()
        returncode = None
    seconds = time.monotonic() - start
    new = sorted(_snapshot(workdir) - before)
    forbid = [p for p in case.forbid if p not in case.allow]
    left = [p for p in forbid if (workdir / p).exists() or (workdir / p).is_symlink()]
    # anything new in the working folder is left behind too (its top-level entries, once each)
    for path in new:
        top = path.split(os.sep)[0]
        inside = lambda paths, path=path: any(path == f or path.startswith(f + os.sep) for f in paths)  # noqa: E731
        if top not in left and not inside(forbid) and not inside(case.allow):
            left.append(top)
    leaked = []
    variants = _secret_variants(case.secrets)
    for stream, text in (("stdout", stdout), ("stderr", stderr)):
        hits = [s for s in variants if s in text]
        if hits:
            leaked.append(f"{stream} ({hits[0]!r})")
    if variants:
        leaked += _scan_files((workdir, *scan), variants)
    return Outcome(returncode, stdout, stderr, seconds, sorted(set(left)), leaked)


def to_result(case: Case, outcome: Outcome, root: Path | None = None) -> Result:
    category, detail = classify(case, outcome)
    message = key_line(outcome.stdout, outcome.stderr)
    lines = nonempty_lines(outcome.stderr)
    if category == OTHER and len(lines) > 1 and TRACEBACK_MARK not in outcome.stderr:
        message = f"{lines[0].strip()[:160]} ⏎ … {message}"  # the extra line is the problem: show it first

    def clean(text: str) -> str:
        return text.replace(str(root), "<tmp>") if root else text

    return Result(
        name=case.name, klass=case.klass, argv=list(case.argv), category=category, passed=category in PASSING,
        returncode=outcome.returncode, seconds=round(outcome.seconds, 1),
        message=clean(message)[:400], detail=clean(detail),
        stderr_first_line=clean(next(iter(nonempty_lines(outcome.stderr)), ""))[:400],
        stderr_lines=len(nonempty_lines(outcome.stderr)), stdout_lines=len(nonempty_lines(outcome.stdout)),
        left_behind=outcome.left_behind, leaked=outcome.leaked,
        stderr_tail=clean("\n".join(outcome.stderr.rstrip().splitlines()[-15:])),
        stdout_tail=clean("\n".join(outcome.stdout.rstrip().splitlines()[-5:])),
        shown=list(case.shown or case.argv),
    )


# --- fixtures -------------------------------------------------------------------------------------

GOOD_SPACE = """\
name: tiny-lora
placement: {mode: all}
modules:
  lora:
    targets: {choices: [[query, value], [query, key, value]]}
    size: {grid: [2, 4, 8], tie: per_layer}
    alpha: 2.0
"""

BAD_SPACES = {
    "space-grid0.yaml": GOOD_SPACE.replace("grid: [2, 4, 8]", "grid: [0]"),
    "space-grid-negative.yaml": GOOD_SPACE.replace("grid: [2, 4, 8]", "grid: [-4, 8]"),
    "space-grid-empty.yaml": GOOD_SPACE.replace("grid: [2, 4, 8]", "grid: []"),
    "space-unknown-module.yaml": GOOD_SPACE.replace("  lora:", "  lorax:"),
    "space-unknown-key.yaml": GOOD_SPACE.replace("    alpha: 2.0", "    alpha: 2.0\n    rnak: 4"),
    "space-unknown-top-key.yaml": GOOD_SPACE + "modulez: {}\n",
    "space-unknown-role.yaml": GOOD_SPACE.replace("[query, value]", "[query, nope]"),
    "space-no-modules.yaml": "name: empty\nplacement: {mode: all}\nmodules: {}\n",
    "space-layers-out-of-range.yaml": GOOD_SPACE.replace("{mode: all}", "{mode: all, layers: [0, 99]}"),
    "space-bad-tie.yaml": GOOD_SPACE.replace("tie: per_layer", "tie: sometimes"),
    "space-malformed.yaml": "name: x\nmodules:\n  lora: {size: [1, 2\n",
    "space-list.yaml": "- lora\n- prefix\n",
    "space-empty.yaml": "",
    "space-data-size-zero.yaml": GOOD_SPACE + "data: {strategy: random, size: 0}\n",
    "space-data-unknown-strategy.yaml": GOOD_SPACE + "data: {strategy: nope, size: 0.5}\n",
}

TEXT_FILES = {
    # degenerate data
    "one-class.csv": "sentence,label\n" + "".join(f"the movie was good {i},1\n" for i in range(40)),
    "empty-text.csv": "sentence,label\n" + "".join(f",{i % 2}\n" for i in range(40)),
    "blank-text.csv": "sentence,label\n" + "".join(f"\" \",{i % 2}\n" for i in range(40)),
    "no-label.csv": "sentence\n" + "".join(f"the movie was good {i}\n" for i in range(40)),
    "only-label.csv": "label\n" + "".join(f"{i % 2}\n" for i in range(40)),
    "header-only.csv": "sentence,label\n",
    "empty.csv": "",
    "ragged.csv": "sentence,label\na,1\nb,0,extra,cells\nc\n" + "".join(f"d {i},{i % 2}\n" for i in range(20)),
    "missing-labels.csv": "sentence,label\n" + "".join(f"s {i},{'' if i % 3 else i % 2}\n" for i in range(40)),
    "one-row.csv": "sentence,label\nthe movie was good,1\n",
    "broken.jsonl": '{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": \n',
    "not-utf8.csv": None,  # written as bytes below
    "data.xlsx": "sentence,label\na,1\n",
    # configs and points
    "config-malformed.yaml": "model: model\ntrials: [1, 2\n",
    "config-unknown-key.yaml": "model: model\ndataset: task\nspace: space.yaml\ntrails: 3\n",
    "config-list.yaml": "- model\n- dataset\n",
    "config-bad-value.yaml": "model: model\ndataset: task\nspace: space.yaml\ntrials: three\nout: out\n",
    "config-malformed.toml": 'model = "model"\ntrials = \n',
    "config-malformed.json": '{"model": "model", "trials": 3,,}',
    "point-malformed.yaml": "modules:\n  lora: {layers: [0, 1], size: 8\n",
    "point-unknown-module.yaml": "modules:\n  lorax: {layers: [0, 1], size: 8, targets: [query, value]}\n",
    "point-empty.yaml": "modules: {}\n",
    "point-list.yaml": "- lora\n",
    "point-bad-layer.yaml": "modules:\n  lora: {layers: [0, 42], size: 8, targets: [query, value]}\n",
    "point-size-zero.yaml": "modules:\n  lora: {layers: [0, 1], size: 0, targets: [query, value]}\n",
    "peft-malformed.json": '{"peft_type": "LORA", "r": 8,',
    "peft-unknown-type.json": '{"peft_type": "SUPERLORA", "r": 8}',
    "peft-bad-rank.json": '{"peft_type": "LORA", "r": -1, "target_modules": ["query", "value"]}',
    "peft-unknown-field.json": '{"peft_type": "LORA", "r": 8, "rnak": 4}',
    "ds-malformed.json": '{"zero_optimization": {"stage": 2,}',
    "study.txt": "",
}


def _write_tiny_bert(folder: Path, tokenizer_path: str) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(folder)


def _write_tiny_llama(folder: Path, tokenizer_path: str) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    tokenizer.add_special_tokens({"bos_token": "[CLS]", "eos_token": "[SEP]"})
    config = LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _write_task(folder: Path, rows: int = 48) -> None:
    import random

    rng = random.Random(0)
    good, bad, filler = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"], ["the", "movie", "was", "a"]
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", rows), ("dev", rows // 2), ("test", rows // 2)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            words = rng.sample(filler, 3) + [rng.choice(good if label else bad)]
            rng.shuffle(words)
            lines.append(f"{' '.join(words)}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")


def _write_causal_task(folder: Path, rows: int = 24) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as f:
        for i in range(rows):
            f.write(json.dumps({"instruction": f"add {i} and 1", "output": str(i + 1)}) + "\n")


def make_fixtures(folder: Path, env: dict[str, str], log=print) -> tuple[dict[str, Path], dict[str, str]]:
    """Every fixture a case may name: {name: path}, and {name: why it could not be made}."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    failed: dict[str, str] = {}

    def step(name, make):
        path = folder / name
        try:
            make(path)
            made[name] = path
        except Exception as exc:  # a broken fixture fails only the cases that need it
            failed[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log(f"  fixture {name}: {failed[name]}")

    for name, text in TEXT_FILES.items():
        if text is not None:
            step(name, lambda p, t=text: p.write_text(t))
    step("not-utf8.csv", lambda p: p.write_bytes(b"sentence,label\n\xff\xfe bad \x80\x81,1\n" * 20))
    garbage = bytes(range(256)) * 64
    for name in ("garbage.csv", "garbage.yaml", "garbage.json", "garbage.parquet", "garbage.gguf"):
        step(name, lambda p: p.write_bytes(garbage))
    for name, text in BAD_SPACES.items():
        step(name, lambda p, t=text: p.write_text(t))
    step("space.yaml", lambda p: p.write_text(GOOD_SPACE))
    step("space-dir", lambda p: p.mkdir())
    step("empty-dir", lambda p: p.mkdir())
    step("not-a-run", lambda p: (p.mkdir(), (p / "notes.txt").write_text("hello\n")))
    step("test-only", lambda p: (p.mkdir(), (p / "test.tsv").write_text("sentence\tlabel\na\t1\nb\t0\n")))
    step("task", _write_task)
    step("causal", _write_causal_task)
    step("existing-file", lambda p: p.write_text("not a folder\n"))

    from autopeft.models import resolve_model  # the MiniLM tokenizer (a dev dependency) for both tiny models

    tokenizer = resolve_model("minilm").path
    step("model", lambda p: _write_tiny_bert(p, tokenizer))
    step("llama", lambda p: _write_tiny_llama(p, tokenizer))

    def no_config(p: Path):
        p.mkdir()
        (p / "weights.bin").write_bytes(b"\0" * 64)
    step("model-no-config", no_config)

    def bad_config(p: Path):
        p.mkdir()
        (p / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    step("model-bad-config", bad_config)

    def unsupported(p: Path):
        from transformers import GPT2Config

        p.mkdir()
        GPT2Config(n_layer=2, n_head=2, n_embd=32).to_json_file(p / "config.json")
    step("model-gpt2", unsupported)

    def no_weights(p: Path):
        shutil.copytree(folder / "model", p)
        (p / "model.safetensors").unlink()
    step("model-no-weights", no_weights)

    def run(p: Path):
        done = subprocess.run(
            [sys.executable, "-m", "autopeft.cli", "search", "--model", str(folder / "model"), "--dataset",
             str(folder / "task"), "--space", str(folder / "space.yaml"), "--trials", "1", "--final-seeds", "0",
             "--sampler", "random", "--max-length", "16", "--batch-size", "16", "--max-steps", "2",
             "--no-baselines", "--out", str(p)],
            cwd=folder, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not (p / "run.json").is_file():
            raise RuntimeError(f"a valid 1-trial search failed (exit {done.returncode}): "
                               f"{key_line(done.stdout, done.stderr)}")
    step("run", run)

    def empty_run(p: Path, running: bool = False):
        import optuna

        source = json.loads((folder / "run" / "run.json").read_text())
        p.mkdir()
        (p / "run.json").write_text(json.dumps(source, indent=2))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        old = optuna.storages.RDBStorage(f"sqlite:///{folder / 'run' / 'study.db'}")
        new = optuna.storages.RDBStorage(f"sqlite:///{p / 'study.db'}")
        for summary in old.get_all_studies():  # the same studies, attributes included, without trials
            study = optuna.create_study(storage=new, study_name=summary.study_name, directions=summary.directions)
            for key, value in summary.user_attrs.items():
                study.set_user_attr(key, value)
            if running:
                study.ask()  # a search killed during its first trial
        for engine in (old, new):
            engine.remove_session()
    step("run-empty", empty_run)
    step("run-running", lambda p: empty_run(p, running=True))

    def run_bad_json(p: Path):
        shutil.copytree(folder / "run", p)
        (p / "run.json").write_text('{"study_name": "x", ')
    step("run-bad-json", run_bad_json)

    def run_missing_study(p: Path):
        shutil.copytree(folder / "run", p)
        (p / "study.db").unlink()
    step("run-no-study", run_missing_study)
    return made, failed


# --- the cases ------------------------------------------------------------------------------------

PW = "S3c/retPW"                                  # a password with a '/' (URL masking must still hide it)
URL_SLASH = f"postgresql://alice:{PW}@127.0.0.1:1/db"
URL_PLAIN = "postgresql://alice:S3cretPlainPW@127.0.0.1:1/db"
URL_QUERY = "postgresql://127.0.0.1:1/db?user=alice&password=S3cretQueryPW"
URL_MYSQL = "mysql+pymysql://bob:S3cret%40MyPW@127.0.0.1:1/db"
RAY_URL = "ray://carol:S3cretRayPW@127.0.0.1:1"
SECRETS_SLASH = (PW, "retPW", "alice")
SECRETS_PLAIN = ("S3cretPlainPW", "alice")
SECRETS_QUERY = ("S3cretQueryPW", "alice")
SECRETS_MYSQL = ("S3cret%40MyPW", "S3cret@MyPW", "bob:")
SECRETS_RAY = ("S3cretRayPW", "carol")

TRIAL_DEFAULTS = {"--model": "model", "--dataset": "task", "--max-steps": "2", "--max-length": "16",
                  "--batch-size": "8", "--eval-examples": "8", "--json": "result.json"}
SEARCH_DEFAULTS = {"--model": "model", "--dataset": "task", "--space": "space.yaml", "--trials": "1",
                   "--final-seeds": "0", "--sampler": "random", "--max-length": "16", "--batch-size": "16",
                   "--max-steps": "2", "--out": "out"}


def _with_defaults(command: list[str], defaults: dict[str, str], extra: tuple[str, ...], drop=()) -> tuple[str, ...]:
    given = {a.split("=")[0] for a in extra if a.startswith("-")}
    argv = list(command)
    for option, value in defaults.items():
        if option not in given and option not in drop:
            argv += [option, value]
    return tuple(argv) + tuple(extra)


def _command_case(command, defaults, forbid, name, klass, extra, drop, kw) -> Case:
    """A case of ``command`` with every default option the case does not set itself (or drop)."""
    forbid = tuple(f for f in (*forbid, *kw.pop("forbid", ())) if f not in kw.get("allow", ()))
    shown = (command, "…", *extra) if extra else (command, "…") + tuple(f"(no {o})" for o in drop)
    return Case(name, klass, _with_defaults([command], defaults, extra, drop), forbid=forbid, shown=shown, **kw)


def trial(name, klass, *extra, drop=(), **kw) -> Case:
    """A bad `autopeft trial`: cheap enough (2 steps, 16 tokens) that an accepted one still ends quickly."""
    return _command_case("trial", TRIAL_DEFAULTS, ("result.json", "adapter"), name, klass, extra, drop, kw)


def search(name, klass, *extra, drop=(), **kw) -> Case:
    return _command_case("search", SEARCH_DEFAULTS, ("out", "runs"), name, klass, extra, drop, kw)


def select_data(name, klass, *extra, drop=(), **kw) -> Case:
    defaults = {"--model": "model", "--dataset": "task", "--strategy": "random", "--size": "8", "--out": "sel"}
    return _command_case("select-data", defaults, ("sel",), name, klass, extra, drop, kw)


def sensitivity(name, klass, *extra, drop=(), **kw) -> Case:
    defaults = {"--model": "model", "--dataset": "task", "--batches": "1", "--batch-size": "4",
                "--max-length": "16", "--out": "sens"}
    return _command_case("sensitivity", defaults, ("sens",), name, klass, extra, drop, kw)


def select_heads(name, klass, *extra, drop=(), **kw) -> Case:
    defaults = {"--model": "llama", "--dataset": "causal", "--epochs": "1", "--train-examples": "8",
                "--batch-size": "4", "--max-length": "16", "--out": "heads"}
    return _command_case("select-heads", defaults, ("heads",), name, klass, extra, drop, kw)


def space_cmd(name, klass, sub, space_file, *extra, **kw) -> Case:
    argv = ["space", sub, space_file]
    if "--model" not in extra and "-m" not in extra:
        argv += ["--model", "model"]
    return Case(name, klass, tuple(argv) + tuple(extra), **kw)


RUN = ("run",)

# Near-duplicates of default cases, run only with --extended (keeps the default run near 6 minutes).
EXTENDED = {
    "cli-unknown-global-option", "select-data-misspelled-strategy", "search-missing-space", "sensitivity-missing-out",
    "export-missing-run", "trial-batch-size-negative", "trial-lr-zero", "trial-lr-inf", "trial-max-steps-negative",
    "trial-eval-examples-negative", "trial-train-examples-fraction", "trial-lora-alpha-0", "trial-lora-targets-empty",
    "trial-seed-negative", "trial-max-length-0", "trial-train-examples-0", "trial-seed-abc",
    "search-trials-negative", "search-max-params-0", "search-fidelity-zero", "search-fidelity-words",
    "search-final-seeds-negative", "search-quasi-random-negative", "search-time-budget-0", "search-epochs-0",
    "search-max-length-0", "search-sensitive-layers-0", "search-lr-negative", "search-eval-examples-0",
    "search-max-params-tiny", "search-warmup-size-0", "search-unknown-fidelity-resource",
    "search-warmup-size-without-pool", "trial-unknown-deepspeed-preset", "trial-causal-generation-negative",
    "search-objectives-order", "search-workers-without-ray", "trial-unknown-metric", "trial-unknown-label-column",
    "trial-model-is-a-file", "trial-model-bad-config", "trial-data-blank-text", "trial-data-unsupported-extension",
    "trial-data-missing-path", "trial-data-ragged-rows", "trial-data-one-row", "trial-data-only-label",
    "sensitivity-data-header-only", "search-space-grid-empty", "search-space-unknown-top-key", "search-space-bad-tie",
    "search-space-data-unknown-strategy", "search-space-grid-negative", "search-space-no-modules",
    "search-space-list", "search-space-folder", "space-show-unknown-module", "space-show-samples-negative",
    "space-sample-n-abc", "trial-point-list", "trial-point-binary", "trial-point-size-0", "trial-point-missing",
    "trial-peft-config-binary", "search-config-list", "search-config-missing", "search-config-malformed-json",
    "search-storage-password", "export-missing-folder", "report-a-file", "report-killed-first-trial",
    "sensitivity-out-is-a-file", "select-data-size-negative", "select-data-size-abc", "select-data-batch-size-0",
    "sensitivity-batch-size-0", "sensitivity-max-length-0", "sensitivity-budgets-empty", "select-heads-l1-negative",
    "select-heads-lr-0", "cli-unknown-subcommand", "trial-option-without-value", "trial-max-steps-0",
    "search-time-budget-soon", "search-fidelity-not-ending-at-1", "search-prior-batches-0", "search-cpus-per-trial-0",
    "search-warmup-pool-without-size", "trial-causal-max-new-tokens-0", "search-lr-nan", "trial-data-binary-parquet",
    "search-space-empty", "search-space-data-size-zero", "space-sample-n-negative", "trial-peft-config-unknown-field",
    "search-config-malformed-toml", "search-storage-unknown-dialect", "report-not-a-run", "sensitivity-budgets-abc",
    "select-heads-epochs-0", "trial-data-empty-folder",
}


def all_cases() -> list[Case]:
    c: list[Case] = []
    # -- the command line itself
    c += [
        Case("version", GOOD_CLASS, ("--version",), expect="ok"),
        Case("cli-unknown-command", "unknown command", ("serach",)),
        Case("cli-unknown-subcommand", "unknown command", ("space", "shwo", "space.yaml")),
        Case("cli-unknown-global-option", "misspelled option", ("--verbose", "search")),
        search("search-misspelled-trials", "misspelled option", "--trails", "3"),
        trial("trial-misspelled-lora-r", "misspelled option", "--lora-rank", "4"),
        select_data("select-data-misspelled-strategy", "misspelled option", "--stratgy", "random"),
        search("search-missing-model", "missing required option", drop=("--model",)),
        search("search-missing-space", "missing required option", drop=("--space",)),
        trial("trial-missing-dataset", "missing required option", drop=("--dataset",)),
        select_data("select-data-missing-size", "missing required option", drop=("--size",)),
        sensitivity("sensitivity-missing-out", "missing required option", drop=("--out",)),
        Case("space-show-missing-model", "missing required option", ("space", "show", "space.yaml")),
        Case("export-missing-run", "missing required option", ("export",)),
        trial("trial-option-without-value", "missing option value", "--lr"),
    ]
    # -- numbers that cannot be parsed or make no sense
    c += [
        trial("trial-batch-size-0", "bad number", "--batch-size", "0"),
        trial("trial-batch-size-negative", "bad number", "--batch-size", "-4"),
        trial("trial-lr-nan", "bad number", "--lr", "nan"),
        trial("trial-lr-negative", "bad number", "--lr", "-1"),
        trial("trial-lr-zero", "bad number", "--lr", "0"),
        trial("trial-lr-inf", "bad number", "--lr", "inf"),
        # the trial ran: its --json record (status diverged) is the requested output, not a partial one
        trial("trial-lr-1000-diverges", "diverging training", "--lr", "1000", "--max-steps", "12",
              allow=("result.json",)),
        trial("trial-epochs-abc", "unparsable number", "--epochs", "abc"),
        trial("trial-epochs-0", "bad number", "--epochs", "0", drop=("--max-steps",)),
        trial("trial-max-steps-0", "bad number", "--max-steps", "0"),
        trial("trial-max-steps-negative", "bad number", "--max-steps", "-2"),
        trial("trial-max-length-0", "bad number", "--max-length", "0"),
        trial("trial-eval-examples-0", "bad number", "--eval-examples", "0"),
        trial("trial-eval-examples-negative", "bad number", "--eval-examples", "-5"),
        trial("trial-train-examples-0", "bad number", "--train-examples", "0"),
        trial("trial-train-examples-fraction", "bad number", "--train-examples", "2.5"),
        trial("trial-lora-r-0", "bad PEFT setting", "--lora-r", "0"),
        trial("trial-lora-r-negative", "bad PEFT setting", "--lora-r", "-3"),
        trial("trial-lora-alpha-0", "bad PEFT setting", "--lora-alpha", "0"),
        trial("trial-lora-targets-nope", "bad PEFT setting", "--lora-targets", "nope"),
        trial("trial-lora-targets-empty", "bad PEFT setting", "--lora-targets", ","),
        trial("trial-seed-abc", "unparsable number", "--seed", "abc"),
        trial("trial-seed-negative", "bad number", "--seed", "-1"),
        search("search-trials-three", "unparsable number", "--trials", "three"),
        search("search-trials-0", "bad number", "--trials", "0"),
        search("search-trials-negative", "bad number", "--trials", "-2"),
        search("search-max-params-200pct", "bad number", "--max-params", "200%"),
        search("search-max-params-0", "bad number", "--max-params", "0"),
        search("search-max-params-lots", "unparsable number", "--max-params", "lots"),
        search("search-max-params-tiny", "impossible budget", "--max-params", "1"),
        search("search-fidelity-decreasing", "bad number", "--fidelity", "0.5,0.25,1"),
        search("search-fidelity-zero", "bad number", "--fidelity", "0,1"),
        search("search-fidelity-not-ending-at-1", "bad number", "--fidelity", "0.25,0.5"),
        search("search-fidelity-words", "unparsable number", "--fidelity", "a,b"),
        search("search-eta-1", "bad number", "--eta", "1", "--fidelity", "0.5,1"),
        search("search-final-seeds-negative", "bad number", "--final-seeds", "-1"),
        search("search-quasi-random-negative", "bad number", "--quasi-random", "-1"),
        search("search-time-budget-soon", "unparsable number", "--time-budget", "soon"),
        search("search-time-budget-0", "bad number", "--time-budget", "0"),
        search("search-batch-size-0", "bad number", "--batch-size", "0"),
        search("search-lr-nan", "bad number", "--lr", "nan"),
        search("search-lr-negative", "bad number", "--lr", "-1"),
        search("search-epochs-0", "bad number", "--epochs", "0", drop=("--max-steps",)),
        search("search-eval-examples-0", "bad number", "--eval-examples", "0"),
        search("search-max-length-0", "bad number", "--max-length", "0"),
        search("search-prior-batches-0", "bad number", "--prior", "sensitivity", "--prior-batches", "0"),
        search("search-sensitive-layers-0", "bad number", "--prior", "sensitivity", "--sensitive-layers", "0"),
        search("search-warmup-size-0", "bad number", "--warmup-pool", "task", "--warmup-size", "0"),
        search("search-cpus-per-trial-0", "bad number", "--backend", "ray", "--cpus-per-trial", "0"),
    ]
    # -- unknown names
    c += [
        search("search-unknown-sampler", "unknown name", "--sampler", "annealing"),
        search("search-unknown-backend", "unknown name", "--backend", "slurm"),
        search("search-unknown-objective", "unknown name", "--objectives", "metric,nope"),
        search("search-objectives-order", "unknown name", "--objectives", "params,metric"),
        search("search-unknown-prior", "unknown name", "--prior", "nope"),
        search("search-unknown-subset-strategy", "unknown name", "--subset-strategy", "nope"),
        search("search-unknown-fidelity-resource", "unknown name", "--fidelity-resource", "steps",
               "--fidelity", "0.5,1"),
        search("search-unknown-deepspeed-preset", "unknown name", "--deepspeed", "zero9"),
        search("search-workers-without-ray", "inconsistent options", "--workers-per-trial", "2"),
        search("search-warmup-pool-without-size", "inconsistent options", "--warmup-pool", "task"),
        search("search-warmup-size-without-pool", "inconsistent options", "--warmup-size", "10"),
        trial("trial-unknown-task", "unknown name", "--task", "translation"),
        trial("trial-unknown-metric", "unknown name", "--metric", "bleu"),
        trial("trial-unknown-deepspeed-preset", "unknown name", "--deepspeed", "zero9"),
        trial("trial-unknown-text-column", "missing column", "--text-column", "nope"),
        trial("trial-unknown-label-column", "missing column", "--label-column", "nope"),
        trial("trial-point-and-peft-config", "inconsistent options", "--point", "point-empty.yaml",
              "--peft-config", "peft-bad-rank.json"),
        trial("trial-verbalizer-word-count", "inconsistent options", "--model", "llama", "--verbalizer", "a,b,c"),
        trial("trial-verbalizer-with-response-column", "inconsistent options", "--model", "llama", "--verbalizer",
              "bad,good", "--response-column", "sentence"),
        trial("trial-causal-unknown-response", "missing column", "--model", "llama", "--dataset", "causal",
              "--response-column", "nope"),
        trial("trial-causal-generation-negative", "bad number", "--model", "llama", "--dataset", "causal",
              "--generation-examples", "-1"),
        trial("trial-causal-max-new-tokens-0", "bad number", "--model", "llama", "--dataset", "causal",
              "--generation-examples", "2", "--max-new-tokens", "0"),
    ]
    # -- models that are not models
    c += [
        trial("trial-model-missing", "bad model", "--model", "./no/such/model"),
        trial("trial-model-no-config", "bad model", "--model", "model-no-config"),
        trial("trial-model-bad-config", "bad model", "--model", "model-bad-config"),
        trial("trial-model-no-weights", "bad model", "--model", "model-no-weights"),
        trial("trial-model-is-a-file", "bad model", "--model", "existing-file"),
        trial("trial-model-hub-offline", "bad model", "--model", "nobody/no-such-model"),
        space_cmd("space-show-model-unsupported", "bad model", "show", "space.yaml", "--model", "model-gpt2"),
        space_cmd("space-show-model-garbage-gguf", "binary file as input", "show", "space.yaml",
                  "--model", "garbage.gguf"),
    ]
    # -- degenerate data
    for name, dataset in (("one-class", "one-class.csv"), ("empty-text", "empty-text.csv"),
                          ("blank-text", "blank-text.csv"), ("no-label", "no-label.csv"),
                          ("only-label", "only-label.csv"), ("header-only", "header-only.csv"),
                          ("empty-file", "empty.csv"), ("ragged-rows", "ragged.csv"),
                          ("missing-labels", "missing-labels.csv"), ("one-row", "one-row.csv"),
                          ("broken-jsonl", "broken.jsonl"), ("not-utf8", "not-utf8.csv"),
                          ("unsupported-extension", "data.xlsx"), ("empty-folder", "empty-dir"),
                          ("no-train-split", "test-only"), ("missing-path", "no/such/data.csv")):
        c.append(trial(f"trial-data-{name}", "degenerate data", "--dataset", dataset))
    c += [
        trial("trial-data-binary", "binary file as input", "--dataset", "garbage.csv"),
        trial("trial-data-binary-parquet", "binary file as input", "--dataset", "garbage.parquet"),
        search("search-data-one-class", "degenerate data", "--dataset", "one-class.csv"),
        select_data("select-data-data-empty-text", "degenerate data", "--dataset", "empty-text.csv"),
        sensitivity("sensitivity-data-header-only", "degenerate data", "--dataset", "header-only.csv"),
    ]
    # -- broken files: spaces, points, PEFT / DeepSpeed / search configs
    for file in BAD_SPACES:
        label = file.removeprefix("space-").removesuffix(".yaml")
        c.append(search(f"search-space-{label}", "bad space", "--space", file))
    c += [
        search("search-space-missing", "bad space", "--space", "no-such-space.yaml"),
        search("search-space-binary", "binary file as input", "--space", "garbage.yaml"),
        search("search-space-folder", "bad space", "--space", "space-dir"),
        space_cmd("space-show-grid0", "bad space", "show", "space-grid0.yaml"),
        space_cmd("space-show-unknown-module", "bad space", "show", "space-unknown-module.yaml"),
        space_cmd("space-sample-binary", "binary file as input", "sample", "garbage.yaml"),
        space_cmd("space-show-samples-0", "bad number", "show", "space.yaml", "--samples", "0"),
        space_cmd("space-show-samples-negative", "bad number", "show", "space.yaml", "--samples", "-5"),
        space_cmd("space-sample-n-negative", "bad number", "sample", "space.yaml", "-n", "-1"),
        space_cmd("space-sample-n-abc", "unparsable number", "sample", "space.yaml", "-n", "abc"),
        trial("trial-point-missing", "bad point/config file", "--point", "no-such-point.yaml"),
        trial("trial-point-malformed", "bad point/config file", "--point", "point-malformed.yaml"),
        trial("trial-point-unknown-module", "bad point/config file", "--point", "point-unknown-module.yaml"),
        trial("trial-point-empty", "bad point/config file", "--point", "point-empty.yaml"),
        trial("trial-point-list", "bad point/config file", "--point", "point-list.yaml"),
        trial("trial-point-bad-layer", "bad point/config file", "--point", "point-bad-layer.yaml"),
        trial("trial-point-size-0", "bad point/config file", "--point", "point-size-zero.yaml"),
        trial("trial-point-binary", "binary file as input", "--point", "garbage.yaml"),
        trial("trial-peft-config-malformed", "bad point/config file", "--peft-config", "peft-malformed.json"),
        trial("trial-peft-config-unknown-type", "bad point/config file", "--peft-config", "peft-unknown-type.json"),
        trial("trial-peft-config-bad-rank", "bad point/config file", "--peft-config", "peft-bad-rank.json"),
        trial("trial-peft-config-unknown-field", "bad point/config file", "--peft-config", "peft-unknown-field.json"),
        trial("trial-peft-config-binary", "binary file as input", "--peft-config", "garbage.json"),
        trial("trial-deepspeed-malformed", "bad point/config file", "--deepspeed", "ds-malformed.json"),
        search("search-config-missing", "bad point/config file", "--config", "no-such-config.yaml"),
        search("search-config-malformed", "bad point/config file", "--config", "config-malformed.yaml"),
        search("search-config-unknown-key", "bad point/config file", "--config", "config-unknown-key.yaml"),
        search("search-config-list", "bad point/config file", "--config", "config-list.yaml"),
        search("search-config-bad-value", "bad point/config file", "--config", "config-bad-value.yaml",
               drop=("--trials",)),
        search("search-config-malformed-toml", "bad point/config file", "--config", "config-malformed.toml"),
        search("search-config-malformed-json", "bad point/config file", "--config", "config-malformed.json"),
        search("search-config-binary", "binary file as input", "--config", "garbage.yaml"),
    ]
    # -- storage URLs (secrets must never show)
    c += [
        search("search-storage-password-with-slash", "bad storage URL (with credentials)", "--storage", URL_SLASH,
               secrets=SECRETS_SLASH),
        search("search-storage-password", "bad storage URL (with credentials)", "--storage", URL_PLAIN,
               secrets=SECRETS_PLAIN),
        search("search-storage-password-in-query", "bad storage URL (with credentials)", "--storage", URL_QUERY,
               secrets=SECRETS_QUERY),
        search("search-storage-mysql-escaped-password", "bad storage URL (with credentials)", "--storage", URL_MYSQL,
               secrets=SECRETS_MYSQL),
        search("search-storage-unknown-dialect", "bad storage URL", "--storage", "nosuchdb://127.0.0.1/x"),
        search("search-storage-not-a-journal", "bad storage URL", "--storage", "study.txt"),
        search("search-storage-unwritable", "bad storage URL", "--storage", "sqlite:////proc/no-such-dir/study.db"),
        search("search-ray-address-credentials", "bad storage URL (with credentials)", "--backend", "ray",
               "--ray-address", RAY_URL, secrets=SECRETS_RAY, timeout=150),
        Case("export-storage-password-with-slash", "bad storage URL (with credentials)",
             ("export", "run", "--storage", URL_SLASH), forbid=("run/export",), secrets=SECRETS_SLASH,
             copy=RUN, needs=RUN),
        Case("report-storage-password-in-query", "bad storage URL (with credentials)",
             ("report", "run", "--storage", URL_QUERY), forbid=("run/report",), secrets=SECRETS_QUERY,
             copy=RUN, needs=RUN),
    ]
    # -- export / report on things that are not (finished) runs, output paths that cannot be written
    c += [
        Case("export-not-a-run", "not a run folder", ("export", "not-a-run"), forbid=("not-a-run/export",),
             copy=("not-a-run",)),
        Case("export-missing-folder", "not a run folder", ("export", "no-such-run")),
        Case("report-not-a-run", "not a run folder", ("report", "not-a-run"), forbid=("not-a-run/report",),
             copy=("not-a-run",)),
        Case("report-a-file", "not a run folder", ("report", "existing-file")),
        Case("export-zero-trials", "run without finished trials", ("export", "run-empty"),
             forbid=("run-empty/export",), copy=("run-empty",), needs=("run-empty",)),
        # report: a truthful summary (exit 0) of why nothing finished, no plots (docs/reliability.md)
        Case("report-zero-trials", GOOD_CLASS, ("report", "run-empty"), expect="ok",
             copy=("run-empty",), needs=("run-empty",)),
        Case("export-killed-first-trial", "run without finished trials", ("export", "run-running"),
             forbid=("run-running/export",), copy=("run-running",), needs=("run-running",)),
        Case("report-killed-first-trial", GOOD_CLASS, ("report", "run-running"), expect="ok",
             copy=("run-running",), needs=("run-running",)),
        Case("export-broken-run-json", "not a run folder", ("export", "run-bad-json"),
             forbid=("run-bad-json/export",), copy=("run-bad-json",), needs=("run-bad-json",)),
        Case("report-missing-study-db", "not a run folder", ("report", "run-no-study"),
             forbid=("run-no-study/report", "run-no-study/study.db"), copy=("run-no-study",), needs=("run-no-study",)),
        Case("export-out-is-a-file", "unwritable output", ("export", "run", "--out", "existing-file"),
             copy=RUN + ("existing-file",), needs=RUN, forbid=("run/export",)),
        search("search-out-is-a-file", "unwritable output", "--out", "existing-file", copy=("existing-file",)),
        trial("trial-json-is-a-folder", "unwritable output", "--json", "empty-dir", copy=("empty-dir",),
              forbid=("empty-dir/result.json",)),
        trial("trial-save-dir-is-a-file", "unwritable output", "--save-dir", "existing-file", copy=("existing-file",)),
        sensitivity("sensitivity-out-is-a-file", "unwritable output", "--out", "existing-file",
                    copy=("existing-file",)),
        select_data("select-data-out-not-empty", "unwritable output", "--out", "not-a-run", copy=("not-a-run",),
                    forbid=("not-a-run/selection.json", "not-a-run/report.md")),
    ]
    # -- select-data, sensitivity, select-heads
    c += [
        select_data("select-data-size-0", "bad number", "--size", "0"),
        select_data("select-data-size-200pct", "bad number", "--size", "200%"),
        select_data("select-data-size-abc", "unparsable number", "--size", "abc"),
        select_data("select-data-size-negative", "bad number", "--size", "-5"),
        select_data("select-data-size-above-pool", "bad number", "--size", "100000"),
        select_data("select-data-unknown-strategy", "unknown name", "--strategy", "nope"),
        select_data("select-data-stratified-unlabelled-pool", "inconsistent options", "--strategy", "stratified",
                    "--pool", "causal"),
        select_data("select-data-pool-missing", "degenerate data", "--pool", "no-such-pool.csv"),
        select_data("select-data-batch-size-0", "bad number", "--strategy", "kcenter", "--batch-size", "0"),
        select_data("select-data-embedding-model-missing", "bad model", "--strategy", "kcenter",
                    "--embedding-model", "./no/such/model"),
        sensitivity("sensitivity-batches-0", "bad number", "--batches", "0"),
        sensitivity("sensitivity-batch-size-0", "bad number", "--batch-size", "0"),
        sensitivity("sensitivity-budgets-200pct", "bad number", "--budgets", "200%"),
        sensitivity("sensitivity-budgets-abc", "unparsable number", "--budgets", "abc"),
        sensitivity("sensitivity-budgets-empty", "bad number", "--budgets", ","),
        sensitivity("sensitivity-max-length-0", "bad number", "--max-length", "0"),
        select_heads("select-heads-top-k-0", "bad number", "--top-k", "0"),
        select_heads("select-heads-l1-negative", "bad number", "--l1", "-1"),
        select_heads("select-heads-lr-0", "bad number", "--lr", "0"),
        select_heads("select-heads-epochs-0", "bad number", "--epochs", "0"),
        select_heads("select-heads-lr-nan", "bad number", "--lr", "nan"),
    ]
    unknown = EXTENDED - {case.name for case in c}
    assert not unknown, f"EXTENDED names no case: {sorted(unknown)}"
    return [replace(case, extended=True) if case.name in EXTENDED else case for case in c]


# --- the driver -----------------------------------------------------------------------------------

def case_env(root: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               AUTOPEFT_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
               HF_DATASETS_CACHE=str(root / "hf-datasets-cache"), PYTHONWARNINGS="ignore::DeprecationWarning")
    env.pop("COLUMNS", None)
    return env


def prepare_workdir(case: Case, workdir: Path, fixtures: dict[str, Path]) -> None:
    """Link every fixture into the case's folder (so argv says `model`, not a temp path); copy those it may write to."""
    workdir.mkdir(parents=True)
    for name, path in fixtures.items():
        target = workdir / name
        if name in case.copy:
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, target)
        else:
            target.symlink_to(path, target_is_directory=path.is_dir())


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def tally(results: list[Result]) -> dict[str, int]:
    counts = {category: 0 for category in CATEGORIES}
    for result in results:
        counts[result.category] = counts.get(result.category, 0) + 1
    has_good = any(r.klass == GOOD_CLASS for r in results)
    return {k: v for k, v in counts.items() if v or k == PASS or (k == OK and has_good)}


def print_report(results: list[Result], seconds: float) -> None:
    bad = [r for r in results if r.klass != GOOD_CLASS]
    counts = tally(results)
    total_bad = len(bad)
    rows = []
    for category, count in counts.items():
        of = len(results) - total_bad if category == OK else total_bad
        rows.append([category, count, f"{100 * count / of:.0f}%" if of else "-"])
    print()
    print(format_table(rows, ["category", "cases", "share"]))
    passed = sum(r.category == PASS for r in bad)
    print(f"\n{passed}/{total_bad} bad inputs exit 2 with one line; "
          f"{sum(r.category == PARTIAL for r in bad)} partial outputs; "
          f"{sum(r.category == LEAK for r in results)} leaks; {len(results)} cases in {seconds:.0f} s")
    failing = [r for r in results if not r.passed]
    if failing:
        print(f"\nnot passing ({len(failing)}):")
        for r in sorted(failing, key=lambda r: (r.category, r.klass, r.name)):
            detail = f" [{r.detail}]" if r.detail else ""
            print(f"  {r.category:<15} {r.name:<42} {r.message[:150]}{detail}")


_WEB_ADDRESS = re.compile(r"https?://[^\s'\"|)]+")


def _md(text: str) -> str:
    """A table cell: pipes escaped, one line, web addresses in messages shortened to <url>."""
    return _WEB_ADDRESS.sub("<url>", text).replace("|", "\\|").replace("\n", " ")


MARK_BEGIN = "<!-- BEGIN check_bad_inputs table (generated by scripts/check_bad_inputs.py --markdown) -->"
MARK_END = "<!-- END check_bad_inputs table -->"


def markdown_table(results: list[Result], seconds: float) -> str:
    bad = [r for r in results if r.klass != GOOD_CLASS]
    passed = sum(r.category == PASS for r in bad)
    lines = [
        f"Last run: {len(results)} cases in {seconds:.0f} s; **{passed}/{len(bad)} bad inputs exit 2 with one line**, "
        f"{sum(r.category == PARTIAL for r in bad)} partial outputs, {sum(r.category == LEAK for r in results)} leaks. "
        "Tally: " + ", ".join(f"{k} {v}" for k, v in tally(results).items()) + ".",
        "",
        "| bad-input class | cases | pass | failing |",
        "|---|---|---|---|",
    ]
    classes = sorted({r.klass for r in results})
    for klass in classes:
        members = [r for r in results if r.klass == klass]
        failing = ", ".join(f"{r.name} ({r.category})" for r in members if not r.passed)
        lines.append(f"| {_md(klass)} | {len(members)} | {sum(r.passed for r in members)} | {_md(failing) or '–'} |")
    lines += [
        "",
        "Every case (`…` stands for the cheap options the script adds: the tiny model and task, 2 steps, "
        "16 tokens, `--out`/`--json` in the case's folder; `--list` prints the full command lines):",
        "",
        "| bad-input class | case | command | what the user sees | exit | status |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r.klass, r.name)):
        argv = "autopeft " + " ".join(a if a and " " not in a else repr(a) for a in (r.shown or r.argv))
        status = "ok" if r.passed else f"**FAILING: {r.category}**" + (f" ({r.detail})" if r.detail else "")
        exit_code = "timeout" if r.returncode is None else str(r.returncode)
        lines.append(f"| {_md(r.klass)} | {_md(r.name)} | `{_md(argv)}` | {_md(r.message[:220])} | {exit_code} | "
                     f"{_md(status)} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, table: str) -> None:
    """Replace the generated block of an existing page, or write the table alone."""
    block = f"{MARK_BEGIN}\n{table}{MARK_END}"
    if path.is_file():
        text = path.read_text()
        if MARK_BEGIN in text and MARK_END in text:
            head, rest = text.split(MARK_BEGIN, 1)
            tail = rest.split(MARK_END, 1)[1]
            path.write_text(head + block + tail)
            return
    path.write_text(block + "\n")


def main(argv: list[str] | None = None) -> int:
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                        ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)  # the fixtures are made in this process too
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[],
                        help="run the cases whose name or class contains this (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="cases at once (default 2)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case (default 120)")
    parser.add_argument("--json", type=Path, help="write per-case results here")
    parser.add_argument("--markdown", type=Path, help="write the docs table here (replaces the generated block "
                                                      "of docs/reliability.md)")
    parser.add_argument("--extended", action="store_true",
                        help=f"also run the {len(EXTENDED)} near-duplicate cases (about 10 more minutes)")
    parser.add_argument("--extended-only", action="store_true", help="run just the near-duplicate cases")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (its path is printed)")
    args = parser.parse_args(argv)

    cases = [c for c in all_cases() if (c.extended if args.extended_only else args.extended or not c.extended)]
    names = [c.name for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SystemExit(f"duplicate case names: {sorted(duplicates)}")
    if args.only:
        cases = [c for c in cases if any(s.lower() in (c.name + " " + c.klass).lower() for s in args.only)]
    if args.list:
        for case in cases:
            print(f"{case.name:<45} {case.klass:<36} autopeft {' '.join(case.argv)}")
        print(f"{len(cases)} cases")
        return 0
    if not cases:
        print("no case matches --only", file=sys.stderr)
        return 2

    start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="autopeft-bad-inputs-"))
    try:
        env = case_env(root, root / "cache")
        print(f"making fixtures in {root} ...", flush=True)
        fixtures, failed_fixtures = make_fixtures(root / "fixtures", env)
        print(f"fixtures ready in {time.monotonic() - start:.0f} s; running {len(cases)} cases, {args.jobs} at a time",
              flush=True)
        prefix = [sys.executable, "-m", "autopeft.cli"]
        results: list[Result] = []

        def one(index: int, case: Case) -> Result:
            missing = [n for n in case.needs if n not in fixtures]
            if missing:
                why = "; ".join(f"{n}: {failed_fixtures.get(n, 'not made')}" for n in missing)
                return Result(case.name, case.klass, list(case.argv), SETUP, False, None, 0.0, why, "fixture missing",
                              shown=list(case.shown or case.argv))
            workdir = root / "cases" / f"{index:03d}-{case.name}"
            prepare_workdir(case, workdir, fixtures)
            case_cache = root / "cache" / case.name
            outcome = run_case(case, workdir, {**env, "AUTOPEFT_CACHE": str(case_cache)}, prefix,
                               case.timeout or args.timeout, scan=(case_cache,))
            logs = root / "logs"
            logs.mkdir(exist_ok=True)
            (logs / f"{index:03d}-{case.name}.stdout").write_text(outcome.stdout)
            (logs / f"{index:03d}-{case.name}.stderr").write_text(outcome.stderr)
            return to_result(case, outcome, root)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(one, i, case): case for i, case in enumerate(cases)}
            for done_count, future in enumerate(as_completed(futures), start=1):
                result = future.result()
                results.append(result)
                mark = "pass" if result.passed else "FAIL"
                print(f"[{done_count:3d}/{len(cases)}] {mark} {result.category:<15} {result.name:<42} "
                      f"{result.seconds:5.1f}s  {result.message[:90]}", flush=True)
        order = {c.name: i for i, c in enumerate(cases)}
        results.sort(key=lambda r: order[r.name])
        seconds = time.monotonic() - start
        print_report(results, seconds)
        if args.json:
            args.json.write_text(json.dumps({"seconds": round(seconds, 1), "tally": tally(results),
                                             "cases": [asdict(r) for r in results]}, indent=1) + "\n")
            print(f"wrote {args.json}")
        if args.markdown:
            write_markdown(args.markdown, markdown_table(results, seconds))
            print(f"wrote {args.markdown}")
        return 0 if all(r.passed for r in results) else 1
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
