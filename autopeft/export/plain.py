"""Which exported adapters load in plain PEFT, and the one mix autopeft rewrites into plain PEFT at export.

A point made of one PEFT-native module type (LoRA, with per-layer ranks through ``rank_pattern``; IA3; LN tuning)
is built as that plain PEFT config already (:mod:`autopeft.builders.build`). Every other point is trained with one
of autopeft's own tuners, which PEFT knows only after ``import autopeft`` registers them (without it, loading fails
with a bare ``KeyError: 'AUTOPEFT'``). Of those, export rewrites the one mix that plain PEFT expresses with the very
same trained tensors and the very same forward:

- LoRA or IA3 + LN tuning (``AUTOPEFT`` with those two components): LN tuning trains a copy of each chosen norm and
  runs the copy instead of the norm, which is what PEFT's ``modules_to_save`` does. The export is the LoRA (IA3)
  config with the norms' full names added to its ``modules_to_save``, and the same tensors under the names
  ``modules_to_save`` saves them by (``...LayerNorm.ln_tuning_layers.weight`` -> ``...LayerNorm.weight``).

What stays autopeft's, and why:

- BitFit (``BITFIT``): it trains a delta added beside each frozen bias of the chosen matrices and norms. PEFT's
  nearest form, LoRA's ``bias="all"``/``"lora_only"``, trains the biases themselves, of every matched module
  (and needs LoRA weights): other tensors, and other modules.
- Bottleneck adapters, autopeft's prefix tuning (on encoders, or on some layers), LoFiT and sparse deltas: methods
  PEFT does not have.
- Mixes of two weight methods (LoRA + IA3, LoRA + a bottleneck adapter, ...): one PEFT config holds one method;
  PEFT's mixed models load them as several adapters through another API, nested in an order of their own.

The training itself is never changed for the export: building the LN-tuning mix as LoRA + ``modules_to_save``
would train the norms at the task head's learning rate instead of LN tuning's (:mod:`autopeft.builders.groups`).
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
COMPOSITE = "AUTOPEFT"
HOSTS = ("LORA", "IA3")   # plain PEFT methods whose configs take modules_to_save
LN_TUNING, LN_TUNING_TENSORS = "LN_TUNING", ".ln_tuning_layers."
MODEL_PREFIX = "base_model.model."   # PEFT's prefix of every saved tensor name


def peft_types(config: dict) -> list[str]:
    """The PEFT methods of an ``adapter_config.json`` (a composite's and its components')."""
    types = [str(config.get("peft_type"))]
    types += [str(c.get("peft_type")) for c in config.get("components") or []]
    return list(dict.fromkeys(types))


def autopeft_methods(config: dict) -> list[str]:
    """The methods of an ``adapter_config.json`` that load only after ``import autopeft`` (empty: plain PEFT)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    own = []
    for peft_type in peft_types(config):
        config_cls = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
        if config_cls is None or config_cls.__module__.startswith("autopeft."):
            own.append(peft_type)
    return own


def plain_form(config: dict, tensors: dict) -> tuple[dict, dict] | None:
    """An ``AUTOPEFT`` config of one LoRA/IA3 component plus LN tuning, and its tensors, as the plain LoRA/IA3
    config (the norms in ``modules_to_save``) and tensors that give the same model; None for anything else."""
    if config.get("peft_type") != COMPOSITE:
        return None
    components = config.get("components") or []
    hosts = [c for c in components if c.get("peft_type") in HOSTS]
    norms = [c for c in components if c.get("peft_type") == LN_TUNING]
    if len(hosts) != 1 or not norms or len(hosts) + len(norms) != len(components):
        return None
    renamed, norm_modules = {}, set()
    for key, value in tensors.items():
        if LN_TUNING_TENSORS in key:
            module, parameter = key.split(LN_TUNING_TENSORS, 1)
            if not module.startswith(MODEL_PREFIX) or "." in parameter:
                return None
            norm_modules.add(module.removeprefix(MODEL_PREFIX))
            key = f"{module}.{parameter}"
        if key in renamed:
            return None
        renamed[key] = value
    saved = set(config.get("modules_to_save") or [])
    host = dict(hosts[0])
    host.update(modules_to_save=sorted(saved | norm_modules),
                base_model_name_or_path=config.get("base_model_name_or_path"),
                revision=config.get("revision"), inference_mode=True)
    return host, renamed


def make_plain(folder: str | Path) -> str | None:
    """Rewrite the adapter in ``folder`` into plain PEFT where :func:`plain_form` applies; says what it did, or None."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    if config.get("peft_type") != COMPOSITE or not (folder / WEIGHTS_FILE).is_file():
        return None
    converted = plain_form(config, load_file(folder / WEIGHTS_FILE))
    if converted is None:
        return None
    plain, tensors = converted
    save_file(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(plain, indent=2, sort_keys=True) + "\n")
    return (f"trained as autopeft's {COMPOSITE} mix of {plain['peft_type']} + {LN_TUNING}; exported as plain "
            f"PEFT {plain['peft_type']} with the tuned norms in modules_to_save (the same tensors and forward)")


def set_base_model(folder: str | Path, base_id: str) -> None:
    """``base_model_name_or_path`` of the adapter in ``folder`` set to ``base_id`` (a portable id, not the path the
    trial loaded the model from). ``PeftModel.from_pretrained(model, folder)`` does not read it; ``AutoPeftModel``
    and the Hub do."""
    path = Path(folder) / CONFIG_FILE
    config = json.loads(path.read_text())
    if config.get("base_model_name_or_path") != base_id:
        config["base_model_name_or_path"] = base_id
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
