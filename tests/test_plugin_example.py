"""The example plugin package registers its encoder through an entry point and trains like a built-in."""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

import instacli.registry
from instacli.registry import Registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_example"


def declared_entry_points() -> list[EntryPoint]:
    """The entry points exactly as the example's pyproject.toml declares them (what pip would install)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    return [
        EntryPoint(name=name, value=value, group=group)
        for group, entries in project["entry-points"].items()
        for name, value in entries.items()
    ]


@pytest.fixture
def toy_registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A fresh encoder registry that sees the example as if it were pip-installed."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "instacli_toy_encoder", raising=False)
    installed = declared_entry_points()
    monkeypatch.setattr(instacli.registry, "entry_points", lambda group: [ep for ep in installed if ep.group == group])
    return Registry(kind="encoder", group="instacli.encoders", contract="instacli.encoders:ImageEncoder")


def test_toy_encoder_is_discovered_and_trains(toy_registry: Registry) -> None:
    assert toy_registry.names() == ["toy-cnn"]
    entry = toy_registry.get("toy-cnn")
    assert entry.source == "instacli_toy_encoder.toy_cnn"
    assert entry.options() == {"width": 16, "image_size": 64}
    assert entry.description.startswith("A two-convolution CNN")

    torch.manual_seed(0)
    encoder = toy_registry.create("toy-cnn", width=8)
    assert encoder.embed_dim == 16 and encoder.preprocess.image_size == 64
    head = torch.nn.Linear(encoder.embed_dim, 3)
    optimizer = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.1)
    before = encoder.features[0].weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(head(encoder(torch.randn(4, 3, 64, 64))), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    assert not torch.equal(encoder.features[0].weight, before)

    rebuilt = toy_registry.create("toy-cnn", **encoder.saved_options)
    rebuilt.load_state_dict(encoder.state_dict())
    encoder.eval(), rebuilt.eval()
    pixels = torch.randn(2, 3, 64, 64)
    assert torch.equal(rebuilt(pixels), encoder(pixels))


def test_example_does_not_touch_the_global_registry(toy_registry: Registry) -> None:
    toy_registry.discover()
    assert "toy-cnn" not in instacli.registry.encoders.entries
