from __future__ import annotations

import copy
import itertools
import re
import warnings
from collections.abc import Iterator
from typing import Any, Optional

import torch
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING, inject_adapter_in_model
from peft.tuners.ln_tuning.layer import LNTuningLayer
from peft.tuners.tuners_utils import (
    BaseTuner,
    BaseTunerLayer,
    _filter_state_dict_by_key_prefixes,
    _get_tuner_state_dict_key_prefixes,
    _maybe_include_all_linear_layers,
    onload_layer,
)
from peft.utils import _get_submodules
from peft.utils.other import AuxiliaryTrainingWrapper, set_additional_trainable_modules
from peft.utils.peft_types import PeftType
from torch import nn

from autopeft.errors import AutopeftError

from .config import CompositeConfig

# Where a method's layer sits when components share a module, innermost first, one rank per method so that every
# mix has one order: 0 BitFit (the module's own bias), 1 sparse (entries of the weight), 2 LoRA (a low-rank weight
# delta), 3 IA3 (scales the adapted module's activations), 4 LoFiT (edits the heads entering the projection,
# for every path inside it), 5 bottleneck adapters (transform the finished output). Our tuners declare
# `composite_nesting_rank` on their model class; PEFT's are listed here. Methods with no rank keep their modules
# to themselves.
PEFT_NESTING_RANKS = {PeftType.LORA: 2, PeftType.IA3: 3}
# LN tuning trains a deep copy of the module it wraps, which would duplicate any adapter inside that module.
COPIES_WRAPPED_MODULE = {PeftType.LN_TUNING}


def _tuner_class(peft_type: PeftType) -> type[BaseTuner]:
    return PEFT_TYPE_TO_TUNER_MAPPING[peft_type]


def _nesting_rank(peft_type: PeftType) -> Optional[int]:
    return getattr(_tuner_class(peft_type), "composite_nesting_rank", PEFT_NESTING_RANKS.get(peft_type))


def _describe(index: int, config) -> str:
    return f"component {index} ({config.peft_type})"


def predict_targets(config, model: nn.Module) -> set[str]:
    """Names of the modules a component's own tuner will wrap, computed on the model before anything is injected."""
    tuner_cls = _tuner_class(config.peft_type)
    config = _maybe_include_all_linear_layers(copy.deepcopy(config), model)
    # tuners whose name patterns also match modules they skip (BitFit: containers, dropout) say which they adapt
    accepts = getattr(tuner_cls, "accepts_module", None)
    return {
        name
        for name, module in model.named_modules()
        if name
        and tuner_cls._check_target_module_exists(config, name)
        and (accepts is None or accepts(config, module))
    }


def _ancestors(name: str) -> Iterator[str]:
    parts = name.split(".")
    return (".".join(parts[:end]) for end in range(1, len(parts)))


def _inside(outer: set[str], names: set[str]) -> list[str]:
    """Those of ``names`` that lie strictly inside one of the ``outer`` modules."""
    return sorted(name for name in names if any(ancestor in outer for ancestor in _ancestors(name)))


def _inner_of_shared(components: list, i: int, j: int, shared: set[str]) -> Optional[int]:
    """Which of two components sharing modules wraps them first (``None``: one layer holds both)."""
    type_i, type_j = components[i].peft_type, components[j].peft_type
    where = f"'{sorted(shared)[0]}'" + (f" and {len(shared) - 1} more modules" if len(shared) > 1 else "")
    both = f"{_describe(i, components[i])} and {_describe(j, components[j])} both target {where}"
    if type_i == type_j and getattr(_tuner_class(type_i), "composite_shares_layers", False):
        return None
    rank_i, rank_j = _nesting_rank(type_i), _nesting_rank(type_j)
    if rank_i is None or rank_j is None:
        alone = type_i if rank_i is None else type_j
        raise AutopeftError(f"{both}, but {alone} must have its modules to itself in a composite")
    if rank_i == rank_j:
        raise AutopeftError(f"{both}; which one wraps the other would be arbitrary, so target different modules")
    return i if rank_i < rank_j else j


def injection_order(components: list, targets: list[set[str]]) -> list[int]:
    """Component indices in the order to inject them, config order wherever nothing forces another.

    On a shared module the lower nesting rank goes first (it ends up inside). A component whose targets lie inside
    another's targets (LoRA on ``mlp.down_proj``, parallel adapter on ``mlp``) goes first as well, because PEFT does
    not look inside modules that are already wrapped.
    """
    predecessors: list[set[int]] = [set() for _ in components]
    for i, j in itertools.combinations(range(len(components)), 2):
        shared = targets[i] & targets[j]
        if shared:
            inner = _inner_of_shared(components, i, j, shared)
            if inner is not None:
                predecessors[j if inner == i else i].add(inner)
        for outer, inner in ((i, j), (j, i)):
            contained = _inside(targets[outer], targets[inner])
            if not contained:
                continue
            if components[outer].peft_type in COPIES_WRAPPED_MODULE:
                raise AutopeftError(
                    f"{_describe(outer, components[outer])} would copy '{contained[0]}', a target of "
                    f"{_describe(inner, components[inner])}; give it modules without other adapters inside"
                )
            predecessors[outer].add(inner)

    order: list[int] = []
    while len(order) < len(components):
        ready = [i for i in range(len(components)) if i not in order and predecessors[i] <= set(order)]
        if not ready:
            stuck = ", ".join(_describe(i, components[i]) for i in range(len(components)) if i not in order)
            raise AutopeftError(f"the nesting of {stuck} is contradictory; target fewer shared modules")
        order.append(ready[0])
    return order


class CompositeModel(BaseTuner):
    """Injects every component of a ``CompositeConfig`` into one model, so the mix is one PEFT adapter.

    Each component is injected by its own tuner class (as ``peft.inject_adapter_in_model`` does) under the composite's
    adapter name. Saving and loading need nothing method-specific: PEFT selects adapter weights structurally (every
    parameter of every tuner layer except the wrapped ``base_layer``), whichever method the layer belongs to.

    Components may share a module when the nesting of their layers is well defined, innermost first, by nesting
    rank (see the comment above ``PEFT_NESTING_RANKS``): BitFit (0), sparse (1), LoRA (2), IA3 (3), LoFiT (4),
    bottleneck adapters (5). Equal ranks (two components of one method on a module) are refused as arbitrary, except
    for a method whose layer holds several components (a serial and a parallel bottleneck adapter). Methods without a
    rank (LN tuning, PEFT's other methods, tuners without ``composite_nesting_rank``) must have their modules to
    themselves, and LN tuning must not wrap a module that contains another component's target. Merging applies the
    innermost layer first, as the forward pass does.

    A composite adapter must be the only adapter on its model.
    """

    prefix: str = "autopeft_"
    tuner_layer_cls = BaseTunerLayer
    target_module_mapping: dict[str, list[str]] = {}

    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        if state_dict is not None:
            raise AutopeftError("a composite adapter is placed by its config; it cannot be injected from a state_dict")
        if any(isinstance(module, BaseTunerLayer) for module in model.modules()):
            raise AutopeftError("a composite adapter must be the only adapter on its model; start from a fresh model")
        config: CompositeConfig = self.peft_config[adapter_name]
        for component in config.components:
            component.task_type = config.task_type
            component.inference_mode = config.inference_mode

        targets = [predict_targets(component, model) for component in config.components]
        self._check_targets(config, targets)
        for index in injection_order(config.components, targets):
            inject_adapter_in_model(config.components[index], model, adapter_name, low_cpu_mem_usage=low_cpu_mem_usage)
            # the component's tuner leaves its own config on the model; BaseTuner sets the composite's once all are in
            vars(model).pop("peft_config", None)

        self.targeted_module_names = sorted(set().union(*targets))
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)
        self._mark_only_adapters_as_trainable(model)
        set_additional_trainable_modules(
            model=model,
            peft_config=config,
            model_config=BaseTuner.get_model_config(self),
            adapter_name=adapter_name,
            activate_adapter=adapter_name in self.active_adapters,
        )

    @staticmethod
    def _check_targets(config: CompositeConfig, targets: list[set[str]]) -> None:
        saved_in_full = config.modules_to_save or []
        for index, (component, names) in enumerate(zip(config.components, targets)):
            name = _describe(index, component)
            if not names:
                raise AutopeftError(f"{name}: target_modules={component.target_modules} matched no module")
            nested = _inside(names, names)
            if nested:
                raise AutopeftError(f"{name} targets both '{nested[0]}' and a module containing it")
            for module_name in sorted(names):
                if any(re.match(rf"(^|.*\.){saved}($|\..*)", module_name) for saved in saved_in_full):
                    raise AutopeftError(f"{name} targets '{module_name}', which modules_to_save trains in full")

    def _create_and_replace(self, *args: Any, **kwargs: Any) -> None:
        # BaseTuner requires this hook, but inject_adapter hands every module to the component's own tuner instead
        raise TypeError("CompositeModel injects through its components' tuners; it creates no layers itself")

    def _check_merge_allowed(self) -> None:
        super()._check_merge_allowed()
        for name, module in self.model.named_modules():
            if isinstance(module, BaseTunerLayer) and not getattr(module, "supports_merging", True):
                raise AutopeftError(f"cannot merge: '{name}' ({type(module).__name__}) cannot be folded into weights")

    def merge_adapter(self, adapter_names: Optional[list[str]] = None, safe_merge: bool = False) -> None:
        self._check_merge_allowed()
        # innermost first (children come after their parents in modules()): IA3 around BitFit must scale the bias
        # BitFit already merged, exactly as IA3 scales BitFit's output in the forward pass
        for module in reversed(list(self.model.modules())):
            if isinstance(module, BaseTunerLayer):
                with onload_layer(module):
                    module.merge(adapter_names=adapter_names, safe_merge=safe_merge)

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: Optional[list[str]] = None,
    ) -> nn.Module:
        if merge:
            self._check_merge_allowed()
        # innermost first: merges compose as in merge_adapter, and the tuner layers inside a wrapped block (LoRA
        # inside a parallel adapter's mlp) are unwrapped before the block's own wrapper, which PEFT's version misses;
        # modules_to_save wrappers give way to their trained copy, as in PEFT
        wrappers = (BaseTunerLayer, AuxiliaryTrainingWrapper)
        layer_names = [name for name, module in self.model.named_modules() if isinstance(module, wrappers)]
        for name in reversed(layer_names):
            parent, layer, layer_name = _get_submodules(self.model, name)
            with onload_layer(layer):
                if hasattr(layer, "unload_and_optionally_merge_module"):
                    unwrapped = layer.unload_and_optionally_merge_module(
                        merge=merge, safe_merge=safe_merge, adapter_names=adapter_names
                    )
                else:
                    if merge:
                        layer.merge(adapter_names=adapter_names, safe_merge=safe_merge)
                    unwrapped = layer.get_base_layer()
            if unwrapped is None:
                delattr(parent, layer_name)  # a layer attached beside the module (prefix) wraps nothing
            else:
                setattr(parent, layer_name, unwrapped)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        return self.model

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        # LN tuning's trainable layers are copies of the model's own norms and must keep the model's dtype, which is
        # why LNTuningModel skips this cast; undo it for them
        for module in self.model.modules():
            if isinstance(module, LNTuningLayer) and adapter_name in module.ln_tuning_layers:
                base_dtype = next(module.get_base_layer().parameters()).dtype
                module.ln_tuning_layers[adapter_name].to(base_dtype)

    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: CompositeConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        # PeftModel only reports missing keys containing the method's prefix, which a mix of methods lacks
        prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
        expected = _filter_state_dict_by_key_prefixes(model.state_dict(), prefixes)
        loaded = set(remapped) | {key.removeprefix("base_model.model.") for key in remapped}
        missing = sorted(key for key in expected if key not in loaded)
        if missing:
            warnings.warn(f"Found missing adapter keys while loading the checkpoint: {missing}.",
                          stacklevel=1)  # attributed here: the CLI silences peft's own warnings, not this one
        return remapped
