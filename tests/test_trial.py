"""Trial runner on tiny random models (real tokenizer, real data slices)."""

import math

import numpy as np
import pytest
import torch
from peft import LoraConfig

from autopeft.data import load_task
from autopeft.models import get_base_model, resolve_model
from autopeft.trial import Fidelity, TrainingConfig, TrialRunner
from tests.conftest import tiny_bert_config, tiny_llama_config

VOCAB = 30522  # the MiniLM tokenizer's


def save_tiny(tmp_path_factory, name, model):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model("minilm").path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return save_tiny(tmp_path_factory, "bert", BertForSequenceClassification(tiny_bert_config(vocab_size=VOCAB)))


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=VOCAB, pad_token_id=0, bos_token_id=101, eos_token_id=102)
    return save_tiny(tmp_path_factory, "llama", LlamaForCausalLM(config))


@pytest.fixture(scope="module")
def sst2(shared_datasets_module):
    return load_task(str(shared_datasets_module / "glue_sst2"))


@pytest.fixture(scope="module")
def shared_datasets_module():
    from tests.conftest import SHARED_DATASETS

    if not SHARED_DATASETS.is_dir():
        pytest.skip("shared datasets not found")
    return SHARED_DATASETS


SMALL = Fidelity(train_examples=64, max_length=32, batch_size=16, eval_examples=48)
LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")


def test_classification_trial_records_everything(tiny_bert_dir, sst2):
    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    result = runner.run(LORA, SMALL, seed=0, training=TrainingConfig(learning_rate=1e-3), evaluate_test=True)
    assert result.ok, result.reason
    assert set(result.metrics) >= {"accuracy", "macro_f1", "mcc", "eval_loss"}
    assert set(result.test_metrics) >= {"accuracy", "eval_loss"}
    # LoRA A and B on query and value of 2 layers, hidden 32
    assert result.adapter_params == 2 * 2 * 4 * (32 + 32)
    assert result.trainable_params == result.adapter_params + 32 * 2 + 2  # + classifier head
    assert result.steps == 4 and result.train_examples == 64
    assert result.train_seconds > 0 and result.eval_seconds > 0 and result.peak_memory_mb > 0
    assert result.train_examples_per_second > 0 and math.isfinite(result.final_train_loss)


def test_trials_are_reproducible_and_independent_of_order(tiny_bert_dir, sst2):
    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    first = runner.run(LORA, SMALL, seed=3)
    runner.run(LORA, SMALL, seed=4)  # another trial in between must not leak into the next
    again = runner.run(LORA, SMALL, seed=3)
    assert first.metrics == again.metrics
    assert first.final_train_loss == again.final_train_loss


def test_training_changes_the_model(tiny_bert_dir, sst2, tmp_path):
    from peft import PeftModel

    base = get_base_model(tiny_bert_dir, "classification")
    runner = TrialRunner(base, sst2)
    result = runner.run(LORA, SMALL, seed=0, training=TrainingConfig(learning_rate=1e-2), save_dir=tmp_path / "ad")
    assert result.ok
    assert (tmp_path / "ad" / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(base.fresh_copy(0), tmp_path / "ad")
    lora_b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero


def test_nan_loss_ends_the_trial_not_the_process(tiny_bert_dir, sst2):
    from peft import get_peft_model

    def poisoned(model):  # a LoRA whose B matrices are NaN: the first loss is NaN
        peft_model = get_peft_model(model, LORA)
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.data.fill_(float("nan"))
        return peft_model

    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    result = runner.run(poisoned, SMALL, seed=0)
    assert result.status == "nan_loss" and "step 1" in result.reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0])
def test_a_learning_rate_that_cannot_train_is_refused(bad):
    with pytest.raises(ValueError, match="learning rate must be a positive number"):
        TrainingConfig(learning_rate=bad)


def test_a_diverging_trial_is_recorded_diverged_never_ok(tiny_bert_dir, sst2):
    """lr 1000 keeps the loss finite but far above the input-blind predictor's: diverged, with the reason."""
    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    result = runner.run(LORA, SMALL, seed=0, training=TrainingConfig(learning_rate=1000.0))
    assert result.status in ("diverged", "nan_loss") and not result.ok, (result.status, result.metrics)
    if result.status == "diverged":
        assert "input-blind predictor" in result.reason and result.input_blind_loss > 0
        assert result.metrics["eval_loss"] > 3 * result.input_blind_loss
    sane = runner.run(LORA, SMALL, seed=0, training=TrainingConfig(learning_rate=1e-3))
    assert sane.ok and sane.metrics["eval_loss"] <= 3 * sane.input_blind_loss


def test_input_blind_losses_per_task_kind():
    from autopeft.data import TaskSpec, input_blind_loss

    spec = TaskSpec(kind="classification", text_column="t", label_column="y", metric="accuracy",
                    label_names=("a", "b"))
    # train 3:1 -> smoothed prior (4/6, 2/6); eval all class 0: prior CE = -ln(4/6) = 0.405 < ln 2
    assert input_blind_loss(spec, [0, 0, 0, 1], [0, 0]) == pytest.approx(np.log(2))
    # 9:1 and eval of class 1: the prior costs -ln(2/12) = 1.79 > ln 2
    assert input_blind_loss(spec, [0] * 9 + [1], [1]) == pytest.approx(-np.log(2 / 12))
    regression = TaskSpec(kind="regression", text_column="t", label_column="y", metric="pearson")
    assert input_blind_loss(regression, [1.0, 3.0], [2.0, 4.0]) == pytest.approx(10.0)  # zero predictor: (4+16)/2
    causal = TaskSpec(kind="causal_lm", prompt_columns=("q",), response_column="a", metric="eval_loss")
    assert input_blind_loss(causal, (), (), vocab_size=1000) == pytest.approx(np.log(1000))


def test_exception_in_builder_is_an_error_status(tiny_bert_dir, sst2):
    def broken(model):
        raise RuntimeError("bad point")

    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    result = runner.run(broken, SMALL, seed=0)
    assert result.status == "error" and "bad point" in result.reason


def test_explicit_train_indices_are_used(tiny_bert_dir, sst2):
    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    result = runner.run(LORA, SMALL, seed=0, train_indices=np.arange(10))
    assert result.ok and result.train_examples == 10 and result.steps == 1


def test_warmups_run_before_the_task_training_and_are_recorded(tiny_bert_dir, sst2):
    from autopeft.trial.warmup import Warmup

    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    plain = runner.run(LORA, SMALL, seed=0)
    texts = tuple(sst2.train["sentence"][1000:1040])
    lm = runner.run(LORA, SMALL, seed=0, warmup=Warmup("lm", texts=texts, batch_size=16))
    task = runner.run(LORA, SMALL, seed=0, warmup=Warmup("task", train_indices=tuple(range(2000, 2032))))
    assert plain.ok and lm.ok and task.ok
    assert (lm.warmup_steps, task.warmup_steps, plain.warmup_steps) == (3, 2, 0)  # 40 texts / 16; 32 rows / 16
    assert lm.warmup_loss > 0 and task.warmup_loss > 0 and plain.warmup_loss is None
    assert lm.steps == task.steps == plain.steps and lm.train_examples == plain.train_examples == 64
    assert lm.metrics["eval_loss"] != plain.metrics["eval_loss"] != task.metrics["eval_loss"]
    deepspeed = runner.run(LORA, SMALL, seed=0, warmup=Warmup("lm", texts=texts),
                           training=TrainingConfig(deepspeed="zero2"))
    assert deepspeed.status == "error" and "single plain process" in deepspeed.reason


def test_regression_trial(tiny_bert_dir, shared_datasets_module):
    stsb = load_task(str(shared_datasets_module / "glue_stsb"))
    base = get_base_model(tiny_bert_dir, "regression", num_labels=1)
    result = TrialRunner(base, stsb).run(LORA, SMALL, seed=0)
    assert result.ok, result.reason
    assert {"pearson", "spearman", "eval_loss"} <= set(result.metrics)


def test_causal_lm_sft_trial_with_generation(tiny_llama_dir, shared_datasets_module):
    gsm8k = load_task(str(shared_datasets_module / "gsm8k"))
    base = get_base_model(tiny_llama_dir, "causal_lm", num_labels=0)
    fidelity = Fidelity(max_steps=2, batch_size=4, max_length=64, eval_examples=8, generation_examples=3,
                        max_new_tokens=4)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    result = TrialRunner(base, gsm8k).run(config, fidelity, seed=0)
    assert result.ok, result.reason
    assert result.metrics["eval_loss"] > 0 and 0.0 <= result.metrics["exact_match"] <= 1.0
    assert result.steps == 2


def test_kind_mismatch_is_rejected(tiny_bert_dir, shared_datasets_module):
    gsm8k = load_task(str(shared_datasets_module / "gsm8k"))
    with pytest.raises(ValueError, match="causal_lm"):
        TrialRunner(get_base_model(tiny_bert_dir, "classification"), gsm8k)
