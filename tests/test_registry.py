"""Registry behaviour (names, duplicates, broken plugins) and the ``instacli models`` commands."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from typer.testing import CliRunner

import instacli.registry
from instacli import registry
from instacli.cli import models
from instacli.cli.main import app
from instacli.errors import InstacliError
from instacli.registry import Registry
from tests.conftest import PREFIXED_EXAMPLES, every_encoder, tiny_options

BUILTIN_ENCODERS = ["efficientnet-lite0", "hf-vit", "inception-v3", "vit-scratch"]
BUILTIN_REGRESSORS = ["conv1d", "linear", "mlp"]


def first(**_: object) -> None:
    """First factory."""


def second(**_: object) -> None:
    """Second factory."""


def test_builtins_are_registered() -> None:
    assert set(BUILTIN_ENCODERS) <= set(registry.encoders.names())
    assert set(BUILTIN_REGRESSORS) <= set(registry.regressors.names())


def test_duplicate_name_is_an_error_naming_both_sources() -> None:
    fresh = Registry(kind="encoder", group="instacli.test", contract="instacli.encoders:ImageEncoder")
    fresh.add("same", first)
    fresh.add("same", first)  # re-registering the very same factory (a re-import) is harmless
    with pytest.raises(InstacliError) as info:
        fresh.add("same", second)
    message = str(info.value)
    assert f"{__name__}.first" in message and f"{__name__}.second" in message and "rename one" in message


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(InstacliError) as info:
        registry.encoders.get("resnet-9000")
    message = str(info.value)
    assert message.startswith("unknown encoder 'resnet-9000'; known: ")
    assert all(name in message for name in BUILTIN_ENCODERS)


def test_broken_plugin_is_reported_by_name_and_others_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = [
        EntryPoint(name="broken", value="instacli_no_such_plugin_module", group="instacli.encoders"),
        EntryPoint(name="vit-alias", value="instacli_plugins.encoders.vit_scratch:vit_scratch", group="instacli.encoders"),
    ]
    monkeypatch.setattr(instacli.registry, "entry_points", lambda group: installed)
    fresh = Registry(kind="encoder", group="instacli.encoders", contract="instacli.encoders:ImageEncoder")
    with pytest.warns(UserWarning, match="encoder plugin 'broken'.*failed to import"):
        assert fresh.names() == ["vit-alias"]
    assert "ModuleNotFoundError" in fresh.failures["broken"]
    with pytest.raises(InstacliError, match="encoder 'broken' is installed but failed to import .*ModuleNotFoundError"):
        fresh.get("broken")
    assert fresh.create("vit-alias", image_size=16, width=24, heads=2, depth=1).embed_dim == 24


def test_models_list_counts_parameters_and_notes_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.text_encoders.failures, "broken-text", "ImportError: no module named sentencepiece")
    result = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.output.splitlines() if line.count("│") > 5]
    rows = {row[0]: row[1:] for row in cells}
    assert set(BUILTIN_ENCODERS + BUILTIN_REGRESSORS) <= set(rows)
    assert rows["efficientnet-lite0"][:3] == ["encoder", "4.7M", "224"]  # trunk 3.4M + the frozen ImageNet head the semantic prior reads
    assert rows["inception-v3"][:3] == ["encoder", "21.8M", "299"]
    assert rows["linear"][:3] == ["regressor", "388", "—"]  # LayerNorm(128) + Linear(131 → 1)
    assert rows["timm:NAME"][:3] == rows["hf:NAME"][:3] == ["encoder", "—", "—"]  # a prefix is listed, not built
    assert "text encoder plugin 'broken-text' failed to import: ImportError" in result.output


def explode(**_: object) -> None:
    """Would load weights: must not be called."""
    raise AssertionError("built")


def test_summarize_never_builds_what_needs_weights() -> None:
    text = instacli.registry.Entry(name="t", kind="text encoder", factory=explode, source="x")
    hub_only = instacli.registry.Entry(name="h", kind="encoder", factory=explode, source="x", pretrained="some/hub-model")
    for entry in (text, hub_only):
        summary = models.summarize(entry)
        assert summary.parameters is None and summary.problem is None
    assert models.summarize(registry.encoders.get("hf-vit")).parameters > 0  # built with pretrained=None
    broken = instacli.registry.Entry(name="b", kind="encoder", factory=explode, source="x")
    assert models.summarize(broken).problem == "default failed to build: AssertionError: built"


def test_models_show_options_presets_and_source() -> None:
    result = CliRunner().invoke(app, ["models", "show", "vit-scratch"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "source: instacli_plugins.encoders.vit_scratch.vit_scratch" in result.output
    assert "seed-512" in result.output and "pool='flatten'" in result.output
    assert "│ patch_size │ 8" in result.output

    regressor = CliRunner().invoke(app, ["models", "show", "mlp"], env={"COLUMNS": "200"})
    assert "hidden" in regressor.output and "embed_dim" not in regressor.output  # internal options stay hidden

    unknown = CliRunner().invoke(app, ["models", "show", "nope"])
    assert unknown.exit_code == 2 and "error: unknown model 'nope'; known: conv1d, efficientnet-lite0" in unknown.output


@pytest.mark.parametrize("name", every_encoder())
def test_every_encoder_builds_its_contract(name: str) -> None:

    encoder = registry.encoders.create(name, **tiny_options(name))
    assert isinstance(encoder, registry.encoders.base_class()) and encoder.embed_dim > 0


def test_every_prefix_has_a_tiny_example() -> None:
    """A prefix without an example in tests/conftest.py would go untested by the parametrized tests."""
    assert {name.partition(":")[0] for name in PREFIXED_EXAMPLES} == set(registry.encoders.prefixes) == {"timm", "hf"}


@pytest.mark.parametrize("name", registry.regressors.names())
def test_every_regressor_builds_its_contract(name: str) -> None:
    regressor = registry.regressors.create(name, embed_dim=8, num_features=2)
    assert isinstance(regressor, registry.regressors.base_class())


@pytest.mark.parametrize("kind", [registry.encoders, registry.regressors, registry.text_encoders])
def test_a_plugin_that_builds_something_else_is_one_line(kind: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(**_: object) -> object:
        """Returns a plain object."""
        return object()

    monkeypatch.setitem(kind.entries, "wrong-test", registry.Entry("wrong-test", kind.kind, wrong, "tests.wrong"))
    with pytest.raises(InstacliError, match=r"built a object, not a instacli\.\w+\.\w+; the plugin must return a subclass of it"):
        kind.create("wrong-test")
