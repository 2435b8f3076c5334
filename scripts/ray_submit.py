#!/usr/bin/env python
"""Submit ``autopeft search --backend ray`` to a Ray cluster as a Ray job and follow its logs.

    RAY_ADDRESS=http://head:8265 python scripts/ray_submit.py [--working-dir .] -- \\
        --model minilm --dataset /data/sst2 --space search_spaces/autopeft.yaml --trials 40 \\
        --storage postgresql://user:pass@db/optuna

Everything after ``--`` goes to ``autopeft search``; ``--backend ray --ray-address auto`` are added
(the job's driver joins the cluster it runs on). The working directory is uploaded, so relative
paths in the search arguments are relative to it; data and models outside it need absolute paths
that exist on the cluster's nodes. ``HF_*`` variables set here are passed to the job. The job's
driver can die and be resubmitted: the same command resumes the search from its storage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

PASSED_ENV = re.compile(r"^(HF_|TRANSFORMERS_|TOKENIZERS_PARALLELISM$)")
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@]*@")


def _masked(text: str) -> str:
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("error: put the `autopeft search` arguments after --", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="the cluster's job server, e.g. http://head:8265 (default: $RAY_ADDRESS)")
    parser.add_argument("--working-dir", default=".", help="uploaded as the job's working directory")
    parser.add_argument("--no-wait", action="store_true", help="return once submitted (follow with `ray job logs -f`)")
    options = parser.parse_args(argv[:split])
    search_args = argv[split + 1:]
    if not options.address:
        print("error: give --address or set RAY_ADDRESS to the cluster's job server (http://head:8265)",
              file=sys.stderr)
        return 2
    ray = shutil.which("ray")
    if ray is None:
        print("error: the `ray` command is missing: pip install 'autopeft[ray]'", file=sys.stderr)
        return 2
    env_vars = {k: v for k, v in os.environ.items() if PASSED_ENV.match(k)}
    command = [ray, "job", "submit", "--address", options.address, "--working-dir", options.working_dir,
               "--runtime-env-json", json.dumps({"env_vars": env_vars})]
    if options.no_wait:
        command.append("--no-wait")
    command += ["--", "autopeft", "search", "--backend", "ray", "--ray-address", "auto", *search_args]
    print("+ " + _masked(" ".join(command)), file=sys.stderr, flush=True)
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
