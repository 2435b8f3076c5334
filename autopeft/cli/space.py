"""`autopeft space show|sample`: inspect a search space against a model's config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from autopeft.cli.options import ModelOpt, TrustOpt
from autopeft.errors import AutopeftError

space_app = typer.Typer(help="Inspect search spaces.", no_args_is_help=True)

SpaceArg = Annotated[Path, typer.Argument(help="Search-space YAML file, or a packaged space's name (space list).")]


@space_app.command("list")
def list_spaces():
    """The packaged search spaces, by name (what --space accepts besides a file)."""
    from autopeft.space.schema import DEFAULT_SPACE, packaged_spaces, read_space_file

    table = Table(title="packaged search spaces (--space NAME)")
    for column in ("name", "module types", "placement", "description"):
        table.add_column(column, overflow="fold")
    for name, path in packaged_spaces().items():
        spec = read_space_file(path)
        table.add_row(name + (" (default)" if name == DEFAULT_SPACE else ""), ", ".join(spec.modules),
                      spec.placement.mode, spec.description)
    Console().print(table)


def _bind(space_file: Path, model: str, trust_remote_code: bool):
    from autopeft.models import load_model_config
    from autopeft.space import SearchSpace

    return SearchSpace.from_file(space_file, load_model_config(model, trust_remote_code=trust_remote_code))


def _largest_point(space) -> dict:
    """Every layer on and every size at its top; each categorical set to its largest choice, greedily."""
    from optuna.distributions import CategoricalDistribution

    from autopeft.space import count_trainable_params

    params = {d.name: d.distribution.high for d in space.dimensions
              if not isinstance(d.distribution, CategoricalDistribution)}
    # every categorical needs a value before any point can be decoded: start from the first choice
    params.update({d.name: d.distribution.choices[0] for d in space.dimensions
                   if isinstance(d.distribution, CategoricalDistribution)})
    for dim in space.dimensions:
        if isinstance(dim.distribution, CategoricalDistribution):
            params[dim.name] = max(
                dim.distribution.choices,
                key=lambda c: count_trainable_params(space.decode({**params, dim.name: c}), space.model_config),
            )
    return params


def _extremes(space, samples: int, seed: int) -> tuple[int, int]:
    """Smallest non-empty count among random points; largest count (the all-largest point included)."""
    from autopeft.space import count_trainable_params

    rng = np.random.default_rng(seed)
    points = [space.sample(rng) for _ in range(samples)] + [_largest_point(space)]
    counts = [count_trainable_params(space.decode(p), space.model_config) for p in points]
    return min([c for c in counts if c] or [0]), max(counts)


@space_app.command("show")
def show(space_file: SpaceArg, model: ModelOpt, trust_remote_code: TrustOpt = False,
         samples: Annotated[int, typer.Option(help="Random points used to estimate the parameter range.")] = 2000):
    """Dimensions, size of the space, smallest and largest parameter counts."""
    from autopeft.space import count_model_params

    if samples < 1:
        raise AutopeftError(f"--samples must be at least 1, got {samples}")
    space = _bind(space_file, model, trust_remote_code)
    table = Table(title=f"{space.spec.name}: {space.spec.description}")
    for column in ("dimension", "distribution", "exists when"):
        table.add_column(column)
    for dim in space.dimensions:
        condition = f"{dim.parent} in {list(dim.parent_values)}" if dim.parent else ""
        table.add_row(dim.name, _describe(dim.distribution), condition)
    console = Console()
    console.print(table)
    low, high = _extremes(space, samples, seed=0)
    total = count_model_params(space.model_config)
    size = space.cardinality()
    console.print(f"model: {model} ({space.arch.family}, {space.dims.num_layers} layers, {total:,} parameters)")
    console.print(f"space size: {'continuous' if size == float('inf') else f'{size:.4g} points'}")
    console.print(f"trainable parameters: smallest non-empty of {samples} random points {low:,} "
                  f"({100 * low / total:.4f}%), largest {high:,} ({100 * high / total:.3f}% of the model)")


def _describe(distribution) -> str:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, IntDistribution):
        return f"int [{distribution.low}, {distribution.high}]"
    if isinstance(distribution, CategoricalDistribution):
        return "one of " + ", ".join(map(str, distribution.choices))
    return f"float [{distribution.low:g}, {distribution.high:g}]" + (" log" if distribution.log else "")


@space_app.command("sample")
def sample(space_file: SpaceArg, model: ModelOpt, n: Annotated[int, typer.Option("-n", help="Points to draw.")] = 5,
           seed: Annotated[int, typer.Option()] = 0, trust_remote_code: TrustOpt = False):
    """Random points, decoded, with their trainable-parameter counts."""
    import yaml

    from autopeft.space import count_trainable_params

    if n < 1:
        raise AutopeftError(f"-n must be at least 1, got {n}")
    space = _bind(space_file, model, trust_remote_code)
    rng = np.random.default_rng(seed)
    for index in range(n):
        point = space.decode(space.sample(rng))
        params = count_trainable_params(point, space.model_config)
        print(f"# point {index}: {params:,} trainable parameters — {point.describe()}")
        print(yaml.safe_dump(point.to_dict(), sort_keys=False, default_flow_style=None).rstrip())
