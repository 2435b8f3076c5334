"""Train one PEFT configuration at one fidelity and measure it.

A :class:`TrialRunner` is made once per (base model, task) and runs many trials in the same
process: the base model is loaded once and copied in memory per trial, each dataset is tokenised
once, and nothing is spawned per trial. A NaN loss, an out-of-memory or any exception ends that
trial with a status and a reason, never the process.

``TrainingConfig.deepspeed`` trains through DeepSpeed ZeRO; a torch.distributed group of several
ranks (torchrun, Ray Train) makes the trial data-parallel (see :mod:`autopeft.trial.distributed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from autopeft.data import (
    TaskData,
    TrivialScore,
    collate,
    compute_metrics,
    exact_match,
    input_blind_loss,
    length_grouped_batches,
    loss_trivial_score,
    tokenize_task,
    trivial_score,
)
from autopeft.data.tokenize import choice_token_ids
from autopeft.errors import AutopeftError
from autopeft.models import BaseModel
from autopeft.trial import distributed, loop
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.loop import CheckpointMismatch, NonFiniteLoss, Shard, TrainingConfig
from autopeft.trial.memory import PeakMemory
from autopeft.trial.result import DIVERGED, ERROR, NAN_LOSS, OOM, TrialResult
from autopeft.trial.warmup import Warmup, lm_warmup

AdapterFactory = Callable[[torch.nn.Module], torch.nn.Module]
"""Turns a fresh base model into a PEFT model (a builder for a search-space point, or a PEFT config)."""


DIVERGENCE_FACTOR = 3.0
"""A classifier or regressor whose eval loss exceeds this many times the input-blind predictor's diverged."""
CAUSAL_LM_DIVERGENCE_FACTOR = 1.5  # x ln(V): an untrained LM sits near ln(V) itself


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite (``nan_loss``), or the trained model scores far worse than a
    predictor that ignores its input (``diverged``): either way the trial is no result."""

    def __init__(self, message: str, status: str = NAN_LOSS):
        super().__init__(message)
        self.status = status


class AdapterBuildError(RuntimeError):
    """The PEFT configuration could not be applied to the base model."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _as_factory(adapter) -> AdapterFactory:
    if callable(adapter):
        return adapter
    from peft import PeftConfig, get_peft_model

    if isinstance(adapter, PeftConfig):
        return lambda model: get_peft_model(model, adapter)
    raise TypeError(f"adapter must be a PeftConfig or a callable(model) -> PeftModel, got {type(adapter).__name__}")


def verbalized_predictions(logits: torch.Tensor, labels: torch.Tensor, choice_token_ids) -> torch.Tensor:
    """The class whose label word's first token is likeliest right after each row's prompt (verbalised
    classification, :mod:`autopeft.data.tokenize`): the logits one position before the first answer token."""
    first_answer = (labels != -100).int().argmax(dim=1)              # the prompt's length
    rows = torch.arange(len(labels), device=logits.device)
    after_prompt = logits[rows, first_answer.to(logits.device) - 1]  # (batch, vocabulary)
    return after_prompt[:, torch.as_tensor(choice_token_ids, device=logits.device)].float().argmax(-1).cpu()


class TrialRunner:
    """Runs trials of one base model on one task; reuse it for every trial of a search."""

    def __init__(self, base: BaseModel, task: TaskData, *, device: str | torch.device | None = None):
        if base.kind != task.spec.kind:
            raise AutopeftError(f"base model was loaded for '{base.kind}' but the task is '{task.spec.kind}'")
        self.base = base
        self.task = task
        self.device = torch.device(device) if device else distributed.default_device()
        self._input_blind_loss: float | None = None
        self._trivial_scores: dict[tuple, TrivialScore] = {}   # per eval subset (see trivial_score)
        if task.spec.is_verbalized:  # label words this tokenizer cannot tell apart: a DataError now, not per trial
            choice_token_ids(task.spec, base.tokenizer)

    @property
    def input_blind_loss(self) -> float:
        """The validation loss of the input-blind predictor (:func:`autopeft.data.input_blind_loss`), computed once."""
        if self._input_blind_loss is None:
            spec = self.task.spec
            if spec.kind == "causal_lm":
                self._input_blind_loss = input_blind_loss(spec, (), (), vocab_size=len(self.base.tokenizer))
            else:
                self._input_blind_loss = input_blind_loss(spec, self.task.train[spec.label_column],
                                                          self.task.validation[spec.label_column])
        return self._input_blind_loss

    # ------------------------------------------------------------------ public
    def run(
        self,
        adapter,
        fidelity: Fidelity = Fidelity(),
        seed: int = 0,
        training: TrainingConfig = TrainingConfig(),
        *,
        train_indices: np.ndarray | None = None,
        warmup: Warmup | None = None,
        evaluate_test: bool = False,
        save_dir: str | Path | None = None,
        resume_from: str | Path | None = None,
        checkpoint_to: str | Path | None = None,
        parameter_groups: Callable[[torch.nn.Module], list[dict]] | None = None,
    ) -> TrialResult:
        """Train ``adapter`` and evaluate it; never raises for a failing trial.

        ``train_indices`` (into the train split) overrides the seeded random subset of the fidelity:
        data-selection strategies pass theirs here. ``warmup`` pre-fine-tunes the adapter first (masked/causal
        LM on pool texts, or the task loss on other train rows; not with DeepSpeed or several ranks).
        ``save_dir`` receives the trained adapter (from
        rank 0; every rank must pass it, since gathering ZeRO-3 partitions is collective). A bad
        ``training.deepspeed`` raises AutopeftError: that is the user's input, not the trial.

        ``resume_from`` (a folder :meth:`loop.TrainState.save` wrote, e.g. a lower step rung's ``checkpoint_to``)
        continues that training: the adapter is built as always (same seed), its trainable parameters, AdamW's
        state, the schedule and the RNG are loaded, and only the steps still missing are trained (none when the
        checkpoint has as many; the warm-up is in the checkpoint already). The result is what training in one go
        gives. A checkpoint of other parameters or of other training (seed, data, batch size, schedule) fails the
        trial with the reason: it never silently trains from scratch. ``checkpoint_to`` receives the training
        state once the trial has trained and converged. Plain torch in one process only: with DeepSpeed or
        several ranks the trial trains from scratch and writes nothing, and ``result.resume_note`` says so.

        ``parameter_groups`` (built model -> torch parameter groups ``{"params", "lr", "name"}``, e.g.
        :func:`autopeft.builders.parameter_groups_for`) trains each group at its own rate (one per module type);
        None: every trainable parameter at ``training.learning_rate``. The warm-up trains at one rate either way.
        """
        deepspeed_config = distributed.resolve_deepspeed_config(training.deepspeed) if training.deepspeed else None
        result = TrialResult()
        result.started_at = time.time()
        wall_start = time.perf_counter()
        model = engine = None
        try:
            with PeakMemory(self.device) as memory:
                model = self._build(adapter, seed, result)
                groups = parameter_groups(model) if parameter_groups is not None else None
                subset = self._train_subset(fidelity, seed, train_indices)
                meta = self._checkpoint_meta(fidelity, seed, subset)
                resume = self._resume_state(resume_from, checkpoint_to, meta, deepspeed_config is not None, result)
                if warmup is not None and resume is None:
                    self._warmup(model, warmup, fidelity, seed, training, deepspeed_config is not None, result)
                if deepspeed_config is not None:
                    engine = self._deepspeed_engine(model, deepspeed_config, fidelity, len(subset), training, groups)
                run = self._train(model, engine, subset, fidelity, seed, training, result, resume, groups)
                scorer = model if engine is None else engine
                result.metrics = self._evaluate(model, scorer, "validation", fidelity, training, result)
                self._check_converged(result)
                if checkpoint_to is not None and run.state is not None and result.resume_note is None:
                    run.state.meta = meta
                    run.state.save(checkpoint_to)
                self._mark_trivial(result, fidelity, training)
                if evaluate_test and self.task.test is not None:
                    result.test_metrics = self._evaluate(model, scorer, "test", fidelity, training, result)
                if save_dir is not None:
                    distributed.save_adapter(model, save_dir)
            result.peak_memory_mb = memory.peak_mb
        except TrialDiverged as exc:
            result.status, result.reason = exc.status, str(exc)
        except AdapterBuildError as exc:
            result.status, result.reason = ERROR, f"error: {exc}"
        except CheckpointMismatch as exc:
            result.status, result.reason = ERROR, f"error: cannot resume from checkpoint '{resume_from}': {exc}"
        except torch.OutOfMemoryError as exc:
            result.status, result.reason = OOM, str(exc).splitlines()[0]
        except Exception as exc:  # a bad point must end its trial, not the search
            result.status, result.reason = ERROR, (f"error: {type(exc).__name__}: "
                                                   f"{str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            if engine is not None:
                engine.destroy()  # its ZeRO hooks and optimizer state end with the trial
            del model, engine
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        result.wall_seconds = time.perf_counter() - wall_start
        return result

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _checkpoint_meta(fidelity: Fidelity, seed: int, subset: np.ndarray) -> dict:
        """What a training checkpoint's batches and schedule depend on: a run continues it only if they agree."""
        import hashlib

        return {"seed": seed, "batch_size": fidelity.batch_size, "max_length": fidelity.max_length,
                "schedule_steps": fidelity.schedule_length(len(subset)),
                "data": hashlib.sha1(np.asarray(subset, dtype=np.int64).tobytes()).hexdigest()[:16]}

    @staticmethod
    def _resume_state(resume_from, checkpoint_to, meta: dict, deepspeed: bool,
                      result: TrialResult) -> loop.TrainState | None:
        """The checkpoint to continue (None: train from scratch); one of other training raises CheckpointMismatch."""
        if (resume_from is not None or checkpoint_to is not None) and (deepspeed or distributed.world_size() > 1):
            # a DeepSpeed engine owns (and partitions) the optimizer state, and each rank has its own RNG: neither
            # is in a TrainState, so such a trial trains from scratch and leaves no checkpoint
            result.resume_note = ("trained from scratch and wrote no checkpoint: checkpoints need plain torch in one "
                                  "process (not DeepSpeed or several ranks)")
            return None
        if resume_from is None:
            return None
        state = loop.TrainState.load(resume_from)
        differs = sorted(k for k in meta if state.meta.get(k) != meta[k])
        if differs:
            raise CheckpointMismatch(f"it was trained with other {', '.join(differs)} "
                                     f"({', '.join(f'{k}={state.meta.get(k)!r}' for k in differs)}; "
                                     f"this trial: {', '.join(f'{k}={meta[k]!r}' for k in differs)})")
        return state

    def _tokenized(self, fidelity: Fidelity):
        return tokenize_task(self.task, self.base.tokenizer, fidelity.max_length)

    def _build(self, adapter, seed: int, result: TrialResult) -> torch.nn.Module:
        start = time.perf_counter()
        torch.manual_seed(seed)
        try:
            model = _as_factory(adapter)(self.base.fresh_copy(seed))
        except Exception as exc:  # the configuration does not fit the model (e.g. unknown target modules)
            raise AdapterBuildError(f"cannot build the adapter: {type(exc).__name__}: {_first_line(exc)}") from exc
        self._ensure_head_trainable(model)
        model.to(self.device)
        result.adapter_params, result.trainable_params = self._count_trainable(model)
        result.total_params = sum(p.numel() for p in model.parameters())
        result.setup_seconds = time.perf_counter() - start
        return model

    def _is_head_parameter(self, name: str) -> bool:
        name = name.removeprefix("base_model.model.")
        return any(name.startswith(head + ".") for head in self.base._head_names)

    def _ensure_head_trainable(self, model: torch.nn.Module) -> None:
        """A fresh task head must train; builders that left it frozen get it unfrozen here."""
        head = [(n, p) for n, p in model.named_parameters() if self._is_head_parameter(n)]
        if head and not any(p.requires_grad for _, p in head):
            for name, parameter in head:
                if "original_module" not in name:
                    parameter.requires_grad_(True)

    def _count_trainable(self, model: torch.nn.Module) -> tuple[int, int]:
        adapter = trainable = 0
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                trainable += parameter.numel()
                if not self._is_head_parameter(name):
                    adapter += parameter.numel()
        return adapter, trainable

    def _train_subset(self, fidelity: Fidelity, seed: int, train_indices: np.ndarray | None) -> np.ndarray:
        available = len(self.task.train)
        if train_indices is not None:
            indices = np.asarray(train_indices, dtype=np.int64)
            if indices.size == 0 or indices.min() < 0 or indices.max() >= available:
                raise ValueError(f"train_indices must be non-empty indices into the {available}-example train split")
            return indices
        order = np.random.default_rng(seed).permutation(available)
        return np.sort(order[: fidelity.train_size(available)])

    def _warmup(self, model, warmup: Warmup, fidelity: Fidelity, seed: int, training: TrainingConfig,
                deepspeed: bool, result: TrialResult) -> None:
        # the masked-LM loss calls the encoder and a temporary head past any DDP or DeepSpeed wrapper, and a
        # DeepSpeed engine owns one optimizer: the warm-up trains in one plain process
        if deepspeed or distributed.world_size() > 1:
            raise ValueError("a warm-up runs in a single plain process (not with DeepSpeed or several ranks)")
        learning_rate = warmup.learning_rate or training.learning_rate
        if warmup.objective == "task":
            record = TrialResult()
            indices = self._train_subset(fidelity, seed, np.asarray(warmup.train_indices))
            self._train(model, None, indices, replace(fidelity, epochs=warmup.epochs, max_steps=None,
                                                             step_fraction=None, schedule_steps=None), seed,
                        replace(training, learning_rate=learning_rate), record)
            result.warmup_steps, result.warmup_seconds = record.steps, record.train_seconds
            result.warmup_loss = record.final_train_loss
            return
        try:
            done = lm_warmup(model, self.base.tokenizer, self.task.spec.kind, warmup, max_length=fidelity.max_length,
                             learning_rate=learning_rate, max_grad_norm=training.max_grad_norm, bf16=training.bf16,
                             seed=seed, device=self.device)
        except NonFiniteLoss as exc:
            raise TrialDiverged(f"warm-up {exc}") from None
        result.warmup_steps, result.warmup_seconds, result.warmup_loss = (done["steps"], done["seconds"],
                                                                          done["final_loss"])

    def trivial_score(self, fidelity: Fidelity = Fidelity(),
                      training: TrainingConfig = TrainingConfig()) -> TrivialScore:
        """What ignoring the input scores on the eval subset a trial at ``fidelity`` is scored on, computed once
        per subset: the train split's majority class or mean (:func:`autopeft.data.trivial_score`); for a causal
        LM, the base model's own eval loss before any training (one evaluation of the untouched base model)."""
        key = (fidelity.eval_examples, fidelity.max_length)
        if key not in self._trivial_scores:
            split = self._tokenized(fidelity)["validation"]
            indices = self.eval_subset(len(split), fidelity)
            spec = self.task.spec
            # a causal LM's loss is per token: its yardstick is the base model's own, also when its classes are words
            if spec.kind == "causal_lm" and (not spec.is_verbalized or spec.metric == "eval_loss"):
                model = self.base.fresh_copy(0).to(self.device)
                try:
                    metrics = self._evaluate(model, model, "validation", replace(fidelity, generation_examples=0),
                                             training, TrialResult())
                finally:
                    del model
                self._trivial_scores[key] = loss_trivial_score(metrics["eval_loss"], len(indices))
            else:
                labels = split.classes if spec.is_verbalized else split.labels
                self._trivial_scores[key] = trivial_score(spec, self.task.train[spec.label_column], labels[indices])
        return self._trivial_scores[key]

    def _mark_trivial(self, result: TrialResult, fidelity: Fidelity, training: TrainingConfig) -> None:
        """Whether the trial beat ignoring its input by more than the eval subset's standard error
        (:class:`autopeft.data.TrivialScore`); a causal LM must end below its base model's eval loss."""
        trivial = self.trivial_score(fidelity, training)
        score = result.metrics.get(trivial.metric)
        result.trivial_metric, result.metric_stderr = trivial.value, trivial.stderr
        result.trivial = score is not None and trivial.is_trivial(score)

    def _check_converged(self, result: TrialResult) -> None:
        """A non-finite eval loss, or one far above the input-blind predictor's, is divergence, not a result.

        Causal LMs are held to 1.5 x ln(vocabulary): far worse than guessing tokens uniformly."""
        loss = result.metrics.get("eval_loss")
        result.input_blind_loss = self.input_blind_loss
        factor = CAUSAL_LM_DIVERGENCE_FACTOR if self.task.spec.kind == "causal_lm" else DIVERGENCE_FACTOR
        if loss is None:
            return
        if not math.isfinite(loss):
            raise TrialDiverged(f"diverged: eval loss is {loss}", DIVERGED)
        if loss > factor * result.input_blind_loss:
            raise TrialDiverged(f"diverged: eval loss {loss:.4g} > {factor:g} x the input-blind predictor's "
                                f"{result.input_blind_loss:.4g}", DIVERGED)

    def _batch_to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _deepspeed_engine(self, model, config: dict, fidelity: Fidelity, train_size: int, training: TrainingConfig,
                          groups: list[dict] | None = None):
        """DeepSpeed over the trainable parameters (in ``groups`` at their own rates, unless the config has its own
        optimizer or scheduler: DeepSpeed's then set one rate), in a process group made first when there is none."""
        distributed.init_deepspeed_process_group()
        total_steps = fidelity.schedule_length(train_size)  # a step rung stops early in the full schedule
        config = distributed.fill_deepspeed_config(config, training, fidelity.batch_size, distributed.world_size(),
                                                   total_steps)
        return distributed.deepspeed_engine(
            model, config, lambda parameters: loop.adamw(parameters, training),
            lambda optimizer: loop.linear_schedule(optimizer, training, total_steps), parameters=groups,
        )

    def _train(self, model, engine, subset, fidelity: Fidelity, seed: int, training: TrainingConfig,
               result: TrialResult, resume: loop.TrainState | None = None,
               groups: list[dict] | None = None) -> loop.TrainingRun:
        """Plain, DistributedDataParallel when torch.distributed has several ranks, or through a DeepSpeed engine.

        With several ranks each takes its contiguous shard of every global batch (``fidelity.batch_size``)
        and weights its loss by its share of the batch's loss terms, so that the ranks' losses sum to the
        global batch's loss.
        """
        split = self._tokenized(fidelity)["train"]
        pad_id = self.base.tokenizer.pad_token_id
        several_ranks = distributed.world_size() > 1

        def task_loss(forward, shard: Shard) -> torch.Tensor:
            output = forward(**self._batch_to_device(collate(split, subset[shard.rows], pad_id)))
            if not several_ranks:
                return output.loss
            share = self._loss_weight(split, subset[shard.rows]) / max(self._loss_weight(split, subset[shard.batch]), 1)
            return output.loss * share if share else output.logits.sum() * 0.0  # no loss terms: zero gradients

        try:
            run = loop.train(model, task_loss, split.lengths[subset], training=training,
                             batch_size=fidelity.batch_size, total_steps=fidelity.num_steps(len(subset)), seed=seed,
                             device=self.device, engine=engine, parameters=groups,
                             schedule_steps=fidelity.schedule_length(len(subset)), resume=resume)
        except NonFiniteLoss as exc:
            raise TrialDiverged(f"training {exc}") from None
        result.train_seconds = run.seconds
        result.steps, result.resumed_steps, result.train_examples = run.steps, run.resumed_steps, len(subset)
        result.train_examples_per_second = run.examples / max(run.seconds, 1e-9)
        result.final_train_loss = run.final_loss
        result.train_losses = [[step, loss] for step, loss in run.losses]
        return run

    @staticmethod
    def _loss_weight(split, rows: np.ndarray) -> int:
        """How many terms the model's mean loss averages: examples, or a causal LM's supervised (shifted) tokens."""
        if split.kind != "causal_lm":
            return len(rows)
        return sum(int((np.asarray(split.labels[i][1:]) != -100).sum()) for i in rows)

    def evaluate(self, model: torch.nn.Module, fidelity: Fidelity = Fidelity(),
                 training: TrainingConfig = TrainingConfig(), split: str = "validation") -> dict[str, float]:
        """Score a model that is already built and trained (e.g. one configuration of a super-adapter) exactly as a
        trial at ``fidelity`` is scored: the same examples of ``split``, the same metrics."""
        return self._evaluate(model, model, split, fidelity, training, TrialResult())

    @staticmethod
    def eval_subset(size: int, fidelity: Fidelity) -> np.ndarray:
        """Positions (sorted) of the examples a trial at ``fidelity`` scores in an evaluation split of ``size``."""
        if fidelity.eval_examples is None or fidelity.eval_examples >= size:
            return np.arange(size)
        # a fixed order, independent of the trial seed: every trial of a search is scored on the same examples
        return np.sort(np.random.default_rng(12345).permutation(size)[: fidelity.eval_examples])

    @torch.inference_mode()
    def _evaluate(self, model, scorer, split_name: str, fidelity: Fidelity, training, result) -> dict[str, float]:
        """Every rank scores the whole split (deterministic, so all agree); ``scorer`` is the model or its engine."""
        tokenized = self._tokenized(fidelity)
        split = tokenized[split_name]
        pad_id = self.base.tokenizer.pad_token_id
        indices = self.eval_subset(len(split), fidelity)
        kind = self.task.spec.kind
        verbalized = self.task.spec.is_verbalized
        scorer.eval()
        start = time.perf_counter()
        loss_sum, loss_weight = 0.0, 0
        predictions, references = [], []
        for batch_positions in length_grouped_batches(
            split.lengths[indices], fidelity.eval_batch_size, seed=0, shuffle=False
        ):
            batch = self._batch_to_device(collate(split, indices[batch_positions], pad_id))
            with loop.autocast(self.device, training):
                output = scorer(**batch)
            labels = batch["labels"]
            if kind == "causal_lm":
                weight = int((labels[:, 1:] != -100).sum())  # HF averages over the shifted response tokens
                if verbalized:
                    predictions.append(verbalized_predictions(output.logits, labels, tokenized.choice_token_ids))
                    references.append(torch.as_tensor(split.classes[indices[batch_positions]]))
            else:
                weight = len(labels)
                logits = output.logits.float()
                predictions.append(logits.squeeze(-1) if kind == "regression" else logits.argmax(-1))
                references.append(labels)
            loss_sum += output.loss.float().item() * weight
            loss_weight += weight
        metrics = {"eval_loss": loss_sum / max(loss_weight, 1)}
        if kind != "causal_lm" or verbalized:
            metrics.update(
                compute_metrics(self.task.spec, torch.cat(predictions).cpu().numpy(),
                                torch.cat(references).cpu().numpy())
            )
        elif fidelity.generation_examples > 0:
            metrics["exact_match"] = self._generation_exact_match(model, split, indices, fidelity, training)
        elapsed = time.perf_counter() - start
        result.eval_seconds += elapsed
        result.eval_examples += len(indices)
        result.eval_examples_per_second = result.eval_examples / max(result.eval_seconds, 1e-9)
        return metrics

    def _generation_exact_match(self, model, split, indices, fidelity: Fidelity, training) -> float:
        """Greedy generation on the first ``generation_examples`` eval examples, left-padded in batches."""
        tokenizer = self.base.tokenizer
        chosen = indices[: fidelity.generation_examples]
        predicted, reference = [], []
        for start in range(0, len(chosen), fidelity.eval_batch_size):
            rows = chosen[start : start + fidelity.eval_batch_size]
            prompts = [list(split.prompt_ids[i]) for i in rows]
            width = max(len(p) for p in prompts)
            input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, prompt in enumerate(prompts):
                input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
                attention_mask[row, width - len(prompt) :] = 1
            with loop.autocast(self.device, training):
                generated = model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    max_new_tokens=fidelity.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            predicted += tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            reference += [split.responses[i] for i in rows]
        return exact_match(predicted, reference)
