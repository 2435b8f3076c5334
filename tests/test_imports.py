"""Optional dependencies: one install hint per package, naming an extra that pyproject.toml declares."""

import sys
from pathlib import Path

import pytest
import tomllib

from autopeft._imports import EXTRAS, install_hint, optional_dependency, require_installed
from autopeft.errors import AutopeftError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_a_failed_import_names_the_extra_on_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)  # what an environment without plotly imports
    with pytest.raises(AutopeftError) as error, optional_dependency("plotly", "`autopeft report`"):
        import plotly.graph_objects  # noqa: F401
    assert str(error.value) == "`autopeft report` needs plotly: pip install 'autopeft[report]'"


def test_require_installed_checks_without_importing(monkeypatch):
    require_installed("matplotlib", "the plot")
    monkeypatch.setitem(sys.modules, "botorch", None)
    with pytest.raises(AutopeftError, match=r"^sampler 'botorch' needs BoTorch: pip install 'autopeft\[botorch\]'$"):
        require_installed("botorch", "sampler 'botorch'")


@pytest.mark.parametrize("package", sorted(EXTRAS))
def test_every_hint_names_an_extra_that_installs_the_package(package):
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    extra = EXTRAS[package][1]
    assert f"'autopeft[{extra}]'" in install_hint(package, "x")
    assert any(requirement.startswith(package) for requirement in extras[extra])
