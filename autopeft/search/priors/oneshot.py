"""``--prior oneshot``: one-shot screening. A super-adapter of the (final) space is trained once
(:mod:`autopeft.priors.oneshot`, cached), NSGA-II explores the space on (one-shot validation loss, exact parameter
count) for ``--screen-evaluations`` scores, and the ``--screen-candidates`` most promising configurations of that
screen (the one-shot front from its lowest loss down, then the next front) start the search: they are trained
stand-alone through the rungs like every other point.

With ``--inherit-weights`` every trial (rungs and final stage) then starts from its slice of the super-adapter
(:class:`autopeft.priors.oneshot.SliceWeights`, handed to the builders as ``BuildContext.initial_weights``).

Screening ignores what a super-adapter cannot tell apart: module types it leaves out are off, and training dimensions
(``lr_scale``, rates) take their neutral value in the points it hands over. Why NSGA-II: a one-shot score costs one
pass over the validation examples, no training, so a population-based sampler can spend dozens of them on a CPU and
thousands on a GPU, and Optuna's runs without a surrogate's per-step cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

from autopeft.errors import SpaceError
from autopeft.search.priors.base import SearchPrior, StartingPoint, register

ORIGIN = "prior:oneshot"


RANK_BY = "eval_loss"
"""What the screen ranks by: the one-shot validation loss, not the task metric. Measured (benchmarks/medium/
oneshot-autopeft-space/oneshot.md, TREC, 30 points of the per-layer space): Spearman ρ with stand-alone accuracy 0.76
for the one-shot loss vs 0.57-0.60 for the one-shot accuracy (and 0.46 for the parameter count alone). A slice of a
super-adapter is a weaker model than the trained point; its loss keeps the ordering its thresholded accuracy loses."""


@dataclass(frozen=True)
class Screened:
    """One configuration the screen scored: its space params, one-shot loss and metric, exact parameter count."""

    params: dict
    description: str
    loss: float          # what the screen ranks by (RANK_BY)
    score: float         # the task metric, for the trivial check and reports
    adapter_params: int
    trivial: bool        # no better than ignoring the input on the scored examples (never a candidate)


@register
class OneShotPrior(SearchPrior):
    name = "oneshot"
    description = "one-shot screening of the space with a super-adapter"

    def prepare(self, base, task) -> str:
        # the super-adapter needs the space as the other priors leave it: it trains in starting_points
        self.base, self.task = base, task
        self.screened: list[Screened] = []
        return "one-shot screening: the super-adapter trains (or is read from the cache) once the space is final"

    def build_context(self) -> dict:
        priors = self.settings.priors
        if priors.inherit_weights and priors.super_adapter:
            from autopeft.priors.oneshot import SliceWeights

            return {"initial_weights": SliceWeights(priors.super_adapter)}
        return {}

    def starting_points(self, space, max_params, note) -> list[StartingPoint]:
        from autopeft.priors.oneshot import SuperAdapter, load_or_train_super_adapter
        from autopeft.trial import TrialRunner

        self.settings.priors.super_adapter = None   # only the super-adapter trained or read below is inherited
        try:
            nested, left_out = SuperAdapter.screened_modules(space)
        except SpaceError as exc:
            note(f"one-shot screening skipped: {exc}" +
                 ("; trials train from scratch (no super-adapter to inherit from)"
                  if self.settings.priors.inherit_weights else ""))
            return []
        if left_out:
            note("one-shot screening leaves out " + ", ".join(f"{m} ({why})" for m, why in left_out.items()))
        settings = self.settings
        fidelity = super_adapter_fidelity(settings.fidelity.full(), settings.priors.screen_epochs)
        oneshot = load_or_train_super_adapter(TrialRunner(self.base, self.task), space, fidelity,
                                              settings.training.config(), settings.seed,
                                              learning_rate=settings.training.lr)
        note("super-adapter " + ("read from the cache" if oneshot.cached else
                                 f"trained in {oneshot.meta['total_seconds']:.1f} s ({oneshot.meta['steps']} steps)"))
        if settings.priors.inherit_weights:
            # the evaluator (here or in a Ray worker) is built from the settings after this: it reads the weights there
            settings.priors.super_adapter = str(oneshot.folder.resolve())   # workers run in other folders
            note("inherited weights: every trial starts from its slice of the super-adapter (module types it leaves "
                 "out from scratch)")
        start = time.perf_counter()
        scoring = screen_fidelity(fidelity, settings.priors.screen_examples)
        self.screened = screen(oneshot, space, settings.priors.screen_evaluations, max_params, settings.seed, scoring)
        examples = "every validation example" if scoring.eval_examples is None else \
            f"{scoring.eval_examples} validation examples"
        note(f"one-shot screen: {settings.priors.screen_evaluations} draws, {len(self.screened)} distinct "
             f"configurations scored on {examples} in {time.perf_counter() - start:.1f} s")
        best = best_candidates(self.screened, settings.priors.screen_candidates)
        if not best:
            note("one-shot screen: no configuration beat the trivial score on the super-adapter; it gives no starting "
                 "point (train it longer: --screen-epochs)")
        return [(s.params, ORIGIN) for s in best]


def super_adapter_fidelity(full, screen_epochs: float):
    """The fidelity the screen's super-adapter trains at: the full fidelity's, ``screen_epochs`` times as long."""
    return replace(full, epochs=full.epochs * screen_epochs,
                   max_steps=None if full.max_steps is None else math.ceil(full.max_steps * screen_epochs))


def screen_fidelity(fidelity, examples: int | None):
    """The fidelity a screen scores at: the trial's, on at most ``examples`` of its validation examples (the first of
    the fixed order trials are scored in, :meth:`autopeft.trial.TrialRunner.eval_subset`)."""
    if examples is None or (fidelity.eval_examples is not None and fidelity.eval_examples <= examples):
        return fidelity
    return replace(fidelity, eval_examples=examples)


def screen(oneshot, space, evaluations: int, max_params: int | None, seed: int, fidelity=None) -> list[Screened]:
    """NSGA-II over ``space`` for ``evaluations`` draws on (one-shot loss, exact parameter count), both minimised;
    each distinct configuration is scored once (at ``fidelity``, default the super-adapter's: its validation
    examples). Draws that cannot train (no module) or exceed ``max_params`` fail."""
    import optuna

    from autopeft.search.engine import point_key
    from autopeft.search.initial_design import neutral_training_params
    from autopeft.space import count_trainable_params

    metric = oneshot.metric
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=seed))
    fidelity = fidelity or oneshot.fidelity
    trivial = oneshot.runner.trivial_score(fidelity, oneshot.training)
    scored: dict[str, Screened] = {}
    for _ in range(evaluations):
        trial = study.ask()
        params = space.suggest(trial)
        point = oneshot.super_adapter.screened(space.decode(params))
        count = count_trainable_params(point, space.model_config)
        if point.is_empty or (max_params is not None and count > max_params):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        key = point_key(point)
        if key not in scored:
            metrics = oneshot.score(point, fidelity)
            if not (math.isfinite(metrics[RANK_BY]) and math.isfinite(metrics[metric])):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            hand_over = space.validate_params({**_switch_off(space, params, oneshot.super_adapter.left_out),
                                               **neutral_training_params(space, point)})
            scored[key] = Screened(hand_over, point.describe(), metrics[RANK_BY], metrics[metric], count,
                                   trivial.is_trivial(metrics[metric]))
        study.tell(trial, [scored[key].loss, float(count)])
    return list(scored.values())


def _switch_off(space, params: dict, left_out: dict) -> dict:
    """``params`` with the modules the super-adapter left out switched off (what the score was of)."""
    params = dict(params)
    for module in left_out:
        if f"{module}.on" in params:
            params[f"{module}.on"] = 0
        for name in [n for n in params if n.startswith(f"{module}.size_level")]:
            params[name] = space.grids[module].index(0)
    return space.active_params(params)


def best_candidates(screened: list[Screened], count: int) -> list[Screened]:
    """The ``count`` most promising non-trivial ones: the one-shot front of (loss, parameters) from its lowest loss
    down, then the next front the same way.

    Why not hypervolume contributions (MO-ASHA's tie-break): they favour a front's extremes, and the cheap extreme of a
    (loss, parameters) front is always the tiniest configurations. Measured: a screen that handed over by
    contribution gave the search its 6 smallest points (2k-46k parameters), all at the majority class at the first
    rung; the search's own quasi-random and sampler points already cover small sizes, the screen is there for
    quality."""
    import numpy as np

    from autopeft.search.pareto import nondominated_ranks

    screened = [s for s in screened if not s.trivial]
    if not screened:
        return []
    losses = np.array([[s.loss, math.log10(s.adapter_params + 1.0)] for s in screened])
    order = np.lexsort((losses[:, 0], nondominated_ranks(losses)))
    return [screened[i] for i in order[:count]]
