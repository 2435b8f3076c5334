"""scripts/check_bad_inputs.py's machinery: running a case and classifying what it did (no autopeft involved)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_bad_inputs.py"


@pytest.fixture(scope="module")
def checker():
    spec = importlib.util.spec_from_file_location("check_bad_inputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def fake(checker, tmp_path, name, code, timeout=20, **case_options):
    """Run `python -c code` through the script's runner, as if it were `autopeft ...`."""
    case = checker.Case(name, "test", (), **case_options)
    workdir = tmp_path / name
    workdir.mkdir()
    outcome = checker.run_case(case, workdir, {"PATH": "/usr/bin:/bin"}, [sys.executable, "-c", code], timeout=timeout)
    return checker.to_result(case, outcome, tmp_path)


def test_real_subprocesses_are_classified(checker, tmp_path):
    one_line = fake(checker, tmp_path, "one-line",
                    "import sys; print('error: --trials must be at least 1, got 0', file=sys.stderr); sys.exit(2)")
    assert one_line.category == checker.PASS and one_line.passed
    assert one_line.message == "error: --trials must be at least 1, got 0"

    crash = fake(checker, tmp_path, "crash",
                 "import sys; sys.stderr.write('loading\\n'); raise ValueError('r must be > 0')")
    assert crash.category == checker.TRACEBACK and not crash.passed
    assert crash.message == "ValueError: r must be > 0"

    partial = fake(checker, tmp_path, "partial",
                   "import os, sys; os.mkdir('out'); print('error: boom', file=sys.stderr); sys.exit(2)",
                   forbid=("out",))
    assert partial.category == checker.PARTIAL and partial.left_behind == ["out"]
    record = fake(checker, tmp_path, "record",
                  "import sys; open('r.json', 'w').write('{}'); print('error: diverged', file=sys.stderr); sys.exit(2)",
                  forbid=("r.json",), allow=("r.json",))
    assert record.category == checker.PASS  # a failure record the case allows is no partial output

    leak = fake(checker, tmp_path, "leak", "import sys; open('run.json', 'w').write('postgresql://u:Pa55word@h/db');"
                "print('error: cannot open storage', file=sys.stderr); sys.exit(2)", secrets=("Pa55word",))
    assert leak.category == checker.LEAK and "run.json" in leak.leaked[0]

    hang = fake(checker, tmp_path, "hang", "import time; time.sleep(60)", timeout=1)
    assert hang.category == checker.TIMEOUT and hang.returncode is None


def outcome(checker, returncode, stderr="", stdout="", left=(), leaked=()):
    return checker.Outcome(returncode, stdout, stderr, 1.0, list(left), list(leaked))


@pytest.mark.parametrize("returncode, stderr, stdout, expected", [
    (2, "error: unknown sampler 'annealing'\n", "", "exit2-one-line"),
    (2, "Usage: autopeft search [OPTIONS]\nTry 'autopeft search --help' for help.\n\n"
        "Error: No such option: --trails Did you mean --trials?\n", "", "exit2-one-line"),
    (2, "note: baseline skipped\nerror: unknown sampler\n", "", "other"),       # chatter before the error
    (2, "error: bad\n", "a table\n", "other"),                                  # stdout is not quiet
    (2, "Usage: autopeft search [OPTIONS]\nError: Missing option\n", "", "other"),  # not click's block
    (1, "error: bad\n", "", "other"),
    (0, "", "trial: ok\n", "accepted"),
    (None, "", "", "timeout"),
    (1, "Traceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'label'\n", "", "traceback"),
])
def test_classification_rule(checker, returncode, stderr, stdout, expected):
    case = checker.Case("c", "test", ())
    assert checker.classify(case, outcome(checker, returncode, stderr, stdout))[0] == expected


def test_good_inputs_leaks_and_partial_outputs(checker):
    version = checker.Case("version", "good input", ("--version",), expect="ok")
    assert checker.classify(version, outcome(checker, 0, stdout="autopeft 0.1.0\n"))[0] == checker.OK
    assert checker.classify(version, outcome(checker, 2, stderr="error: no such option\n"))[0] == checker.OTHER
    bad = checker.Case("c", "test", (), forbid=("out",))
    assert checker.classify(bad, outcome(checker, 2, "error: x\n", left=["out"]))[0] == checker.PARTIAL
    assert checker.classify(bad, outcome(checker, 2, "error: x\n", leaked=["stderr"]))[0] == checker.LEAK


def test_cases_are_well_formed(checker):
    cases = checker.all_cases()
    default = [c for c in cases if not c.extended]
    assert len({c.name for c in cases}) == len(cases)
    assert 100 <= len(default) <= 130
    assert {c.argv[0] for c in default} >= {"trial", "search", "export", "report", "space", "select-data",
                                           "sensitivity", "select-heads"}
    assert all(c.expect == "error" or c.klass == checker.GOOD_CLASS for c in cases)
