"""Every option is declared once (lesion.options) and its reference is generated from that declaration:
``--help`` of every command and the docs' options page cover every key of every config file, with a meaning."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lesion.option_reference import COMMANDS, _MISSING, _written, option_rows, reference_page

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# Keys that are not options: Hydra's own, Lightning's object paths, and the run folder Hydra sets.
NOT_OPTIONS = {"hydra", "_target_", "run_dir"}


def group_files(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def compositions() -> list[tuple[str, list[str]]]:
    """Each command's default config, and train's with every file of each of its groups in turn."""
    cases = [(command, []) for command in COMMANDS]
    for group in ("dataset", "model", "loss", "balance", "trainer", "experiment"):
        cases += [("train", [f"{group}={name}"]) for name in group_files(group)]
    cases += [("evaluate", [f"dataset={name}"]) for name in group_files("dataset")]
    return cases


def composed(command: str, overrides: list[str]) -> dict:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose(command, overrides=overrides), resolve=False)


def undeclared(values: Mapping, rows: dict, prefix: str = "") -> list[str]:
    """The keys of ``values`` that no row declares (a section's row leads to its keys; a leaf's row covers
    whatever value it holds)."""
    missing = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key in NOT_OPTIONS:
            continue
        row = rows.get(dotted)
        if row is None:
            missing.append(dotted)
        elif not row.accepts and isinstance(value, Mapping):
            missing += undeclared(value, rows, f"{dotted}.")
    return missing


@pytest.mark.parametrize("command, overrides", compositions(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_key_of_every_config_file_is_a_declared_option_with_a_meaning(command, overrides):
    config = composed(command, overrides)
    rows = {row.key: row for row in option_rows(COMMANDS[command][1], config)}
    assert undeclared(config, rows) == []
    assert [key for key, row in rows.items() if not row.meaning.strip()] == []


def test_the_declared_defaults_are_the_composed_values():
    """A row's default is what the composed config holds (so --help cannot drift from the YAML files)."""
    config = composed("train", ["dataset=csv", "dataset.root=/d", "dataset.csv=l.csv", "loss=focal", "seed=7"])
    rows = {row.key: row for row in option_rows(COMMANDS["train"][1], config)}
    assert rows["seed"].default == "7"
    assert rows["loss.gamma"].default == _written(config["loss"]["gamma"]) == "2.0"
    assert rows["dataset.csv"].default == "l.csv"
    assert rows["loss.weight"].default == _written(_MISSING)  # loss=focal has no weight


def test_the_options_page_is_what_the_declarations_generate():
    page = REPO / "docs" / "options.md"
    assert page.read_text() == reference_page(CONF), (
        "docs/options.md is stale: regenerate it with python -m lesion.option_reference > docs/options.md")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_every_option_of_the_command_line_with_its_meaning(command, run_cli):
    """``--help`` shows each option of this command line (its defaults as overridden), what it accepts and means."""
    script, section, _ = COMMANDS[command]
    overrides = ["dataset.image_size=96"] if command in ("train", "eda") else []
    result = run_cli(script, *overrides, "--help")
    required = {"evaluate": ["ckpt=x.ckpt"], "export": ["ckpt=x.ckpt"], "demo": ["ckpt=x.ckpt"], "stack": ["sweep=x"]}
    config = composed(command, [*overrides, *required.get(command, [])])
    shown = [row for row in option_rows(section, config) if row.default != _written(_MISSING)]
    assert len(shown) >= len(section.fields)
    for row in shown:
        if row.accepts:
            assert f"  {row.key} = " in result.stdout, row.key
        assert row.meaning.split(";")[0][:40] in " ".join(result.stdout.split()), row.key
    if overrides:
        assert "  dataset.image_size = 96 " in result.stdout
    assert "${hydra:" not in result.stdout and "run_dir" not in result.stdout
