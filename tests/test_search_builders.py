"""`autopeft search` with the real PEFT builders on the AutoPEFT space: baselines first, adapters that load back."""

from __future__ import annotations

import json

import pytest
import torch

from autopeft.cli import main
from autopeft.search import records as R
from autopeft.search.run import read_run_info
from tests.search_helpers import write_tiny_model, write_tiny_task


def test_autopeft_space_search_starts_with_the_baselines_and_exports_loadable_adapters(tmp_path):
    pytest.importorskip("autopeft.builders")
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    # a trivial trial is on no front: a 0.2 init (input-dependent features), one rung, 16 epochs at lr 0.05 let some
    # baseline beat the majority class, so there is a front to export
    model = write_tiny_model(tmp_path / "model", initializer_range=0.2)
    dataset, run = write_tiny_task(tmp_path / "task"), tmp_path / "run"
    main(["search", "--model", model, "--dataset", dataset, "--space", "search_spaces/autopeft.yaml",
          "--trials", "4", "--quasi-random", "0", "--sampler", "tpe", "--final-seeds", "1", "--max-length", "16",
          "--batch-size", "16", "--fidelity", "1", "--lr", "5e-2", "--epochs", "16",  # learns: a front
          "--out", str(run)])
    info = read_run_info(run)
    rung0 = R.load_records(info.open_storage(), info.study_name, info.objectives)["rung-0"]
    origins = [r.attrs[R.ORIGIN] for r in rung0[:4]]
    assert origins == ["baseline:pfeiffer", "baseline:parallel_adapter", "baseline:prefix", "baseline:mam"]
    assert all(r.state == "complete" for r in rung0[:4]), [r.attrs.get(R.REASON) for r in rung0[:4]]
    # the exact parameter count is the measured one
    assert all(r.attrs[R.ADAPTER_PARAMS] == r.attrs[R.RESULT]["adapter_params"] for r in rung0 if r.trained)
    main(["export", str(run)])
    for point in json.loads((run / "export" / "pareto.json").read_text())["points"]:
        base = AutoModelForSequenceClassification.from_pretrained(model)
        loaded = PeftModel.from_pretrained(base, run / "export" / point["adapter"])
        with torch.no_grad():
            assert loaded(input_ids=torch.tensor([[101, 2204, 102]])).logits.shape == (1, 2)
