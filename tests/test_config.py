"""The run's settings: parsed once into frozen records, defaults in one place, short functions."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from minivgg.transfer import config as settings
from minivgg.transfer.cli import build_parser, parse_args
from minivgg.transfer.common import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_can_rewrite_a_setting_after_parsing():
    config = parse_args(["--scales", "64", "128", "--content-layers", "conv4_2", "conv5_2:0.5"])
    for record, field in ((config, "objective"), (config.objective, "alpha"), (config.stages, "scales"),
                          (config.network, "lean"), (config.optimiser, "maxcor"), (config.images, "styles"),
                          (config.output, "out")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, field, None)
    # the collections inside are tuples: nothing to append to or assign into either
    assert config.stages.scales == (64, 128) and config.stages.iterations == (200, 100)
    assert config.objective.content_layers == (("conv4_2", 1.0), ("conv5_2", 0.5))
    with pytest.raises(TypeError):
        config.objective.content_layers[0] = ("conv1_1", 1.0)
    weights = config.objective.content_weights               # a fresh dict for Objective ...
    weights["conv1_1"] = 3.0
    assert "conv1_1" not in dict(config.objective.content_layers)   # ... that changes nothing here


def test_help_shows_the_records_defaults():
    parser = build_parser()
    defaults = {action.dest: action.default for action in parser._actions}
    assert defaults["maxcor"] == settings.OptimiserSettings().maxcor
    assert defaults["pooling"] == settings.NetworkSettings().pooling
    assert defaults["content"] == settings.Images().content
    assert defaults["style"] == list(settings.Images().styles)
    assert defaults["style_layers"] == list(settings.ObjectiveSettings().style_layers)
    text = " ".join(parser.format_help().split())                  # argparse wraps lines
    assert f"default {settings.PAPER_RATIO:g}" in text and f"default {settings.DEFAULT_ITERS}" in text
    config = parse_args([])                                  # and parsing nothing gives the records' defaults
    assert config == settings.RunConfig(), [f for f in dataclasses.fields(config)
                                            if getattr(config, f.name) != getattr(settings.RunConfig(), f.name)]


def test_the_mode_decides_the_weights_and_says_so_when_given_others():
    assert (parse_args(["--mode", "content"]).objective.alpha, parse_args(["--mode", "content"]).objective.beta) == (1, 0)
    assert (parse_args(["--mode", "texture"]).objective.alpha, parse_args(["--mode", "texture"]).objective.beta) == (0, 1)
    assert parse_args(["--ratio", "1e-4"]).objective.alpha == 1e-4
    assert (parse_args(["--alpha", "2", "--beta", "3"]).objective.alpha, ) == (2.0,)
    for argv, message in ((["--mode", "texture", "--ratio", "1e-4"], "--mode texture optimises the style loss alone"),
                          (["--mode", "content", "--alpha", "1", "--beta", "2"], "--alpha and --beta do not apply"),
                          (["--ratio", "1e-4", "--alpha", "1", "--beta", "2"], "not both")):
        with pytest.raises(UsageError, match=message):
            parse_args(argv)


def _long_functions(folder: Path, limit: int = 60):
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)"


def test_no_function_of_the_command_path_or_the_optimisers_is_longer_than_a_screen():
    found = [f for folder in ("minivgg/transfer", "optim") for f in _long_functions(ROOT / folder)]
    allowed = [f for f in found if " build_parser " in f]      # the declarative argument list
    assert found == allowed, found


def test_the_optimizer_default_follows_the_device():
    assert parse_args([]).optimiser.name == "lbfgs"                       # the paper's, on the CPU
    assert parse_args(["--device", "gpu"]).optimiser.name == "lbfgs-device"
    assert parse_args(["--device", "gpu", "--optimizer", "lbfgs"]).optimiser.name == "lbfgs"
    assert parse_args(["--optimizer", "adam"]).optimiser.name == "adam"
