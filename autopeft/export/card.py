"""The model card (README.md) of each exported Pareto point, and the base model's portable name.

The card has Hub front matter (``library_name: peft``, ``base_model``, tags) and says what the adapter is for (the
task, its labels, the metrics as mean ± std over the final seeds), how large it is, which point it is and how the
search found it, and the exact code that loads it: plain PEFT, or ``pip install autopeft`` + ``import autopeft``
when the adapter uses one of autopeft's own methods (:func:`autopeft.export.plain.autopeft_methods`).

The base model is named portably (:func:`portable_model_id`): a built-in alias by its Hub id, a local folder by the
Hub id its config records or else by the folder's own name. An absolute path of the machine that ran the search
never reaches a card or an exported ``adapter_config.json``, nor does any URL credential (:mod:`autopeft.redact`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from autopeft.redact import mask_text

_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")   # "org/name": what a Hub model id looks like
PIPELINE_TAGS = {"classification": "text-classification", "regression": "text-classification",
                 "causal_lm": "text-generation"}
MODEL_CLASSES = {"classification": "AutoModelForSequenceClassification",
                 "regression": "AutoModelForSequenceClassification", "causal_lm": "AutoModelForCausalLM"}


@dataclass(frozen=True)
class BaseModelId:
    """The base model as a card and an exported adapter name it."""

    id: str               # a Hub id, or the local folder's (file's) own name
    on_hub: bool          # whether ``id`` is a Hub id ``from_pretrained`` can fetch
    note: str | None = None


def _hub_looking(value) -> bool:
    return isinstance(value, str) and bool(_HUB_REPO.match(value)) and not Path(value).expanduser().exists()


def portable_model_id(name: str) -> BaseModelId:
    """``--model`` as others can use it: ``minilm`` -> ``sentence-transformers/all-MiniLM-L6-v2``; a local folder
    -> the Hub id its ``config.json`` records (``_name_or_path``), else the folder's name with a note; a Hub id as it
    is. Never an absolute path."""
    from autopeft.models import MODEL_ALIASES

    name = mask_text(str(name))
    alias = MODEL_ALIASES.get(name.lower())
    if alias is not None:
        note = f"autopeft's `{name}` alias: the packaged copy of this model (`{alias.install}`)"
        if alias.gguf_file:
            note += (f", its {alias.gguf_file} GGUF quantisation, dequantised for training; the Hub's full-precision "
                     "weights differ from it slightly")
        return BaseModelId(alias.hub_id, True, note)
    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith((".", "/", "~", "\\")) or not re.match(r"^[\w.-]+(/[\w.-]+)?$",
                                                                                           name)
    if not looks_local:
        return BaseModelId(name, True)
    folder = path.parent if path.suffix == ".gguf" else path
    recorded = None
    try:
        recorded = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        pass
    what = f"the GGUF file `{path.name}`" if path.suffix == ".gguf" else "a local model folder"
    if _hub_looking(recorded):
        return BaseModelId(recorded, True, f"trained from {what}, a copy of this Hub model (its config says so)")
    own_name = path.name or "model"
    return BaseModelId(own_name, False, f"trained from {what} named `{own_name}` whose config names no Hub model: "
                                        "load your copy of that model where the code says its name")


@dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: str | None              # None: the task could not be read back (see note)
    metric: str
    label_names: tuple[str, ...] = ()
    note: str | None = None
    verbalizer: tuple[str, ...] = ()  # a causal LM classifying by label word (verbalised classification)


@dataclass
class PointCard:
    """One exported point, as the card reads it."""

    folder: str                   # the point's folder name in the export
    rank: int                     # 1 = best task metric
    summary: dict                 # autopeft.export.point_summary(...) plus the export's notes
    point_yaml: str
    peft_type: str | None = None              # None: no adapter in the folder
    methods: list[str] = field(default_factory=list)             # every PEFT method in it (a mix's components)
    autopeft_methods: list[str] = field(default_factory=list)
    saved_values: int | None = None           # numbers in adapter_model.safetensors (adapter + task head)
    seeds: list[int] = field(default_factory=list)


def _number(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _with_std(value, std) -> str:
    return _number(value) + (f" ± {std:.4f}" if isinstance(std, (int, float)) else "")


def loading_code(card: PointCard, base: BaseModelId, task: TaskInfo) -> str:
    """The Python that loads the point's adapter on its base model (what the card shows, exactly)."""
    kind = task.kind or "classification"
    model_class = MODEL_CLASSES[kind]
    lines = []
    if card.autopeft_methods:
        lines.append("import autopeft  # registers autopeft's PEFT methods (pip install autopeft)")
    lines += ["from peft import PeftModel", f"from transformers import AutoTokenizer, {model_class}", "",
              f"base_model = {base.id!r}" + ("" if base.on_hub else "  # your copy of it (a folder)"),
              f"adapter = {card.folder!r}  # this folder (or its Hub repository once uploaded)"]
    if kind == "causal_lm":
        lines.append(f"model = {model_class}.from_pretrained(base_model)")
    elif kind == "regression":
        lines.append(f"model = {model_class}.from_pretrained(base_model, num_labels=1, problem_type='regression')")
    else:
        labels = dict(enumerate(task.label_names))
        if labels:
            lines += [f"id2label = {labels!r}", f"model = {model_class}.from_pretrained(",
                      f"    base_model, num_labels={len(labels)}, id2label=id2label,",
                      "    label2id={name: i for i, name in id2label.items()})"]
        else:
            lines.append(f"model = {model_class}.from_pretrained(base_model, num_labels=2)  "
                         "# the task's number of labels (not recorded)")
    lines += ["model = PeftModel.from_pretrained(model, adapter).eval()",
              "tokenizer = AutoTokenizer.from_pretrained(base_model)"]
    if kind == "classification" and task.label_names:
        lines += ["", 'inputs = tokenizer("an example input", return_tensors="pt")',
                  "print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])"]
    if task.verbalizer:
        from autopeft.data.tokenize import verbalized_prompt, verbalized_response

        prompt = verbalized_prompt(_words_only(task.verbalizer), "an example input")
        lines += ["", "# a classifier by label word: the class whose word's first token is likeliest after the prompt",
                  f"words = {list(task.verbalizer)!r}",
                  f"choices = [tokenizer({verbalized_response('{w}')!r}.format(w=w), add_special_tokens=False)"
                  ".input_ids[0] for w in words]",
                  f"inputs = tokenizer({prompt!r}, return_tensors='pt')",
                  "print(words[model(**inputs).logits[0, -1, choices].argmax().item()])"]
    return "\n".join(lines)


def _words_only(words: tuple[str, ...]):
    """What verbalized_prompt reads of a task spec: its words."""
    from autopeft.data.tasks import TaskSpec

    return TaskSpec(kind="causal_lm", verbalizer=words)


def _front_matter(card: PointCard, base: BaseModelId, task: TaskInfo) -> str:
    data: dict = {}
    if card.peft_type is not None:
        data["library_name"] = "peft"
    if base.on_hub:
        data["base_model"] = base.id
    if task.kind in PIPELINE_TAGS:
        data["pipeline_tag"] = PIPELINE_TAGS[task.kind]
    methods = [method.lower() for method in card.methods]
    data["tags"] = list(dict.fromkeys(["autopeft", *methods, *(["peft"] if card.peft_type else [])]))
    return "---\n" + yaml.safe_dump(data, sort_keys=False) + "---\n"


def _metrics_table(summary: dict, task: TaskInfo, objectives: list) -> list[str]:
    """Validation and test metrics, and the objectives; ± std only over several seeds (one seed has no spread)."""
    several = (summary.get("seeds") or 1) > 1
    rows = ["| split | metric | " + ("mean ± std |" if several else "value |"), "|---|---|---|"]
    for split, values, stds in (("validation", summary.get("validation_metrics") or {},
                                 summary.get("validation_metrics_std") or {}),
                                ("test", summary.get("test_metrics") or {}, summary.get("test_metrics_std") or {})):
        for name in sorted(values, key=lambda n: (n != task.metric, n)):
            rows.append(f"| {split} | {name} | {_with_std(values[name], stds.get(name) if several else None)} |")
    if len(rows) == 2:
        rows.append("| - | - | no metrics recorded |")
    values, stds = summary.get("values") or {}, summary.get("values_std") or {}
    objective_text = ", ".join(
        f"{o.name} {'↑' if o.maximize else '↓'} {_with_std(values[o.name], stds.get(o.name) if several else None)}"
        for o in objectives if o.name in values)
    return [*rows, "", f"Searched objectives (the Pareto front's coordinates): {objective_text}."]


def model_card(card: PointCard, base: BaseModelId, task: TaskInfo, *, study: str, front_stage: str | None,
               points: int, objectives: list) -> str:
    s = card.summary
    lines = [_front_matter(card, base, task),
             f"# {study}: Pareto point {card.rank} of {points} ({s.get('trial')})", "",
             f"{s.get('description') or 'a point of the search space'}, found by an autopeft search over PEFT "
             "configurations.", ""]
    if card.peft_type is None:
        lines += ["**This folder holds no adapter:** " + (s.get("note") or "no trained adapter") + ". The point, "
                  "its metrics and the search's record of it are below.", ""]
    lines += ["## Base model", "", f"`{base.id}`" + (f": {base.note}." if base.note else "."), "",
              "## Task", ""]
    if task.kind is None:
        lines.append(f"- {task.name}" + (f" ({task.note})" if task.note else ""))
    else:
        lines.append(f"- {task.name}: {task.kind}, selected on the validation split's {task.metric}")
    if task.label_names:
        lines.append("- labels: " + ", ".join(f"{i} = `{name}`" for i, name in enumerate(task.label_names)))
    if task.verbalizer:
        lines.append("- answered as words (verbalised classification, no new head): "
                     + ", ".join(f"`{name}` → `{word}`" for name, word in zip(task.label_names, task.verbalizer)))
    seeds = s.get("seeds") or 1
    lines += ["", f"## Metrics ({'mean ± std over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'})", "",
              *_metrics_table(s, task, objectives), "", "## Size", "",
              f"- trainable parameters of the PEFT modules: {_number(s.get('adapter_params'))}"]
    if s.get("trainable_params") is not None:
        lines.append(f"- trained in all, with the task head: {_number(s.get('trainable_params'))}")
    if card.saved_values is not None:
        lines.append(f"- saved in adapter_model.safetensors (adapter + task head): {_number(card.saved_values)} "
                     "values")
    lines += ["", "## The point", "", f"{s.get('description') or 'The point'}, in the search space's vocabulary "
              "(point.yaml):", "",
              "```yaml", card.point_yaml.rstrip(), "```", "", "## How it was found", "",
              f"- trial `{s.get('trial')}` of stage `{s.get('stage')}`"
              + (f", origin `{s.get('origin')}`" if s.get("origin") else "")
              + f"; the front is the `{front_stage}` stage's, selected on {s.get('selected_on', 'validation')}"]
    if len(card.seeds) > 1:
        lines.append(f"- seeds {', '.join(map(str, card.seeds))}: the metrics are their mean ± std; the adapter "
                     "weights are the first seed's that trained")
    elif card.seeds:
        lines.append(f"- seed {card.seeds[0]}: the metrics and the adapter weights are this one training's")
    if s.get("plain_peft_note"):
        lines.append(f"- {s['plain_peft_note']}")
    lines += ["- the whole search: pareto.json and trials.csv beside this folder", ""]
    if card.peft_type is not None:
        lines += ["## Loading", ""]
        if card.autopeft_methods:
            lines += [f"The adapter uses autopeft's own PEFT method(s) {', '.join(card.autopeft_methods)}: PEFT "
                      "loads it after `import autopeft` registers them (without it, PEFT fails with "
                      f"`KeyError: '{card.autopeft_methods[0]}'`).", "", "```bash", "pip install autopeft", "```", ""]
        else:
            lines += [f"A plain PEFT adapter ({card.peft_type}): `peft` and `transformers` load it, no autopeft "
                      "needed.", ""]
        lines += ["```python", loading_code(card, base, task), "```", ""]
        if s.get("merged"):
            lines += [f"`merged/` holds the base model with the adapter folded in (plain transformers, "
                      f"`{MODEL_CLASSES[task.kind or 'classification']}.from_pretrained('{card.folder}/merged')`).",
                      ""]
        elif s.get("merged_note"):
            lines += [f"No `merged/` copy: {s['merged_note']}.", ""]
    return mask_text("\n".join(lines))
