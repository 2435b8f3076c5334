"""The trial runner on the real MiniLM and SmolLM2-135M, for a handful of steps."""

import pytest
from peft import LoraConfig

from autopeft.data import load_task
from autopeft.models import get_base_model
from autopeft.trial import Fidelity, TrainingConfig, TrialRunner

pytestmark = pytest.mark.slow


def test_minilm_lora_on_sst2(shared_datasets):
    task = load_task(str(shared_datasets / "glue_sst2"))
    base = get_base_model("minilm", "classification", num_labels=2)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS")
    fidelity = Fidelity(max_steps=8, batch_size=16, max_length=48, eval_examples=64)
    result = TrialRunner(base, task).run(config, fidelity, seed=0, training=TrainingConfig(learning_rate=2e-3),
                                         evaluate_test=True)
    assert result.ok, result.reason
    assert result.adapter_params == 6 * 2 * 8 * (384 + 384)  # 73,728
    assert result.steps == 8 and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert len(result.test_metrics) > 0


def test_smollm2_sft_on_gsm8k_reports_eval_loss(shared_datasets):
    task = load_task(str(shared_datasets / "gsm8k"))
    base = get_base_model("smollm2-135m", "causal_lm", num_labels=0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    fidelity = Fidelity(max_steps=3, batch_size=4, max_length=160, eval_examples=8, generation_examples=2,
                        max_new_tokens=8)
    result = TrialRunner(base, task).run(config, fidelity, seed=0, training=TrainingConfig(learning_rate=1e-3))
    assert result.ok, result.reason
    assert 0.0 < result.metrics["eval_loss"] < 10.0  # a pretrained LM on GSM8K answers: far below ln(49152) = 10.8
    assert "exact_match" in result.metrics
