"""Each command's options are its own: evaluate.py, eda.py, export.py and demo.py refuse any other key (a
training config group added with ``+model=…``) in one line, and their ``--help`` does not offer them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lesion.eda.options import check_eda
from lesion.errors import LesionError
from lesion.options import check_demo, check_evaluate, check_export

REPO = Path(__file__).resolve().parents[1]
CHECKS = {"evaluate": check_evaluate, "eda": check_eda, "export": check_export, "demo": check_demo}
# The config groups each command takes; every other folder of conf/ is training's.
OWN_GROUPS = {"evaluate": {"dataset"}, "eda": {"dataset"}, "export": set(), "demo": set()}
GROUPS = sorted(p.name for p in (REPO / "conf").iterdir() if p.is_dir())
# Groups that add options: experiment files override training's groups (Hydra itself refuses them in another
# command) and hparams_search sets only Hydra's sweeper.
ADDING_OPTIONS = [group for group in GROUPS if group not in ("experiment", "hparams_search")]


def composed(command: str, overrides: list[str], resolve: bool = True) -> dict:
    """``conf/<command>.yaml`` composed with ``overrides`` (and a checkpoint named), as the command checks it
    (``resolve=False``: interpolations left as written, as a training group's ``${run_dir}`` must be here)."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(command, overrides=[*([] if command == "eda" else ["ckpt=a.ckpt"]), *overrides])
    return OmegaConf.to_container(cfg, resolve=resolve)


def foreign_groups(command: str) -> list[str]:
    return [group for group in GROUPS if group not in OWN_GROUPS[command]]


@pytest.mark.parametrize("command, group", [(c, g) for c in CHECKS for g in foreign_groups(c) if g in ADDING_OPTIONS])
def test_a_training_group_added_to_another_command_is_refused(command, group):
    options = set(composed(command, []))
    option = sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))[0]
    with pytest.raises(LesionError) as error:
        CHECKS[command](composed(command, [f"+{group}={option}"], resolve=False))
    where, _, rest = str(error.value).partition(": ")
    assert where not in options and rest.startswith("is not an option lesion knows here — remove it"), str(error.value)


@pytest.mark.parametrize("command", sorted(CHECKS))
@settings(max_examples=10, deadline=None)
@given(key=st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True))
def test_any_key_a_command_does_not_have_is_refused(command, key):
    options = set(composed(command, []))
    if key in options or key in GROUPS or key == "hydra":
        return
    with pytest.raises(LesionError, match=f"^{key}: is not an option lesion knows here — "):
        CHECKS[command](composed(command, [f"+{key}=1"]))


@pytest.mark.parametrize("command", sorted(CHECKS))
def test_a_command_accepts_its_own_options(command):
    CHECKS[command](composed(command, ["out=x"] if command in ("evaluate", "export") else []))


@pytest.mark.parametrize("command", sorted(CHECKS))
def test_help_lists_only_the_commands_own_options(run_cli, command):
    result = run_cli(f"{command}.py", "--help")
    options = [m.group(1) for m in map(re.compile(r"^  ([\w.]+) = ").match, result.stdout.splitlines()) if m]
    keys = {option.split(".")[0] for option in options}  # each option line: "  key = default  (accepts)"
    assert not keys & set(foreign_groups(command)), result.stdout
    assert set(composed(command, [])) <= keys, result.stdout


# logger=csv interpolates ${run_dir}, which only training has.
@pytest.mark.parametrize("group", ["model=baseline", "logger=csv"])
@pytest.mark.parametrize("command", sorted(CHECKS))
def test_a_training_group_given_on_the_command_line_is_one_line_exit_2_writing_nothing(run_cli, tmp_path, command,
                                                                                       group):
    out = [] if command == "demo" else [f"out={tmp_path / ('out.onnx' if command == 'export' else 'out')}"]
    given = [] if command == "eda" else [f"ckpt={tmp_path / 'a.ckpt'}"]
    result = run_cli(f"{command}.py", *given, f"+{group}", *out, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"lesion: error: {group.split('=')[0]}: is not an option lesion knows here — remove it (options: "
        + ", ".join(composed(command, [])) + ")"], result.stderr[-2000:]
    assert not any(tmp_path.iterdir())
