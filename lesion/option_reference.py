"""Every option's reference, generated from its one declaration in :mod:`lesion.options`: the text of each
command's ``--help`` and the docs' options page (``docs/options.md``).

The declaration carries an option's type, range and meaning; its default is the command's composed config
(the YAML files of ``conf/``), read when the text is made, so neither can drift from what the checks accept.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from lesion.configs import config_dir
from lesion.eda.options import OPTIONS as EDA
from lesion.options import DEMO, EVALUATE, EXPORT, TRAIN, Choice, Section, Value
from lesion.stack.options import OPTIONS as STACK

# Each command's script, its options and its config groups (the folders of conf/ its --help lists).
COMMANDS: dict[str, tuple[str, Section, tuple[str, ...]]] = {
    "train": ("train.py", TRAIN, ("experiment", "dataset", "model", "loss", "balance", "trainer", "callbacks",
                                  "logger", "hparams_search")),
    "evaluate": ("evaluate.py", EVALUATE, ("dataset",)),
    "export": ("export.py", EXPORT, ()),
    "demo": ("demo.py", DEMO, ()),
    "eda": ("eda.py", EDA, ("dataset",)),
    "stack": ("stack.py", STACK, ("stack",)),
}
_MISSING = object()


@dataclass(frozen=True)
class Row:
    """One option as the reference shows it: dotted key, default as written, what it accepts, what it means."""

    key: str
    default: str
    accepts: str
    meaning: str


def option_rows(section: Section, values: object, prefix: str = "") -> Iterator[Row]:
    """The rows of ``section``'s options, in declaration order, with defaults from ``values`` (a plain
    mapping of the composed config, unresolved)."""
    values = values if isinstance(values, Mapping) else {}
    for key, spec in section.fields.items():
        dotted = f"{prefix}{key}"
        value = values.get(key, _MISSING)
        if isinstance(spec, Section):
            yield Row(dotted, "", "", spec.doc)
            yield from option_rows(spec, value, f"{dotted}.")
        elif isinstance(spec, Choice):
            yield from _choice_rows(spec, value, dotted)
        else:
            yield Row(dotted, _written(value), spec.accepts(), spec.doc)


def _choice_rows(choice: Choice, values: object, dotted: str) -> Iterator[Row]:
    """A group chosen by name: the options of every alternative, each marked with the names that have it."""
    yield Row(dotted, "", "", choice.doc)
    names = list(choice.sections)
    keys = list(dict.fromkeys(key for section in choice.sections.values() for key in section.fields))
    for key in keys:
        owners = [name for name in names if key in choice.sections[name].fields]
        spec = choice.sections[owners[0]].fields[key]
        if key == "name":  # one row for the choice, with each alternative's own description
            descriptions = dict.fromkeys(choice.sections[name].fields["name"].doc for name in names)
            spec = Value(str, choices=tuple(names), doc=" ".join(descriptions))
        for row in option_rows(Section({key: spec}), values, f"{dotted}."):
            only = "" if len(owners) == len(names) else f"({', '.join(owners)} only) "
            yield Row(row.key, row.default, row.accepts, only + row.meaning if row.meaning else row.meaning)


def _written(value: object) -> str:
    """A default as one would write it on the command line."""
    if value is _MISSING:
        return "—"
    if value == "???":
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_written(v) for v in value) + "]"
    if isinstance(value, Mapping) and value and all(v is None or isinstance(v, Mapping) and "_target_" in v
                                                    for v in value.values()):
        return ", ".join(name for name, spec in value.items() if spec is not None)  # callbacks, loggers: their names
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_written(v)}" for k, v in value.items()) + "}"
    return str(value)


def help_text(command: str, config: Mapping) -> str:
    """``--help`` of ``command``: what it does, its config groups (Hydra's ``$APP_CONFIG_GROUPS``) and every
    option with its default in ``config`` (the composed config of this command line), what it accepts and
    means. ``$`` is doubled: the text is a :class:`string.Template` for Hydra."""
    _, section, groups = COMMANDS[command]
    lines = [_wrap(section.doc, ""), ""]
    if groups:
        lines += ["== Config groups (GROUP=NAME) ==", "$APP_CONFIG_GROUPS", ""]
    lines += ["== Options (KEY=VALUE; the defaults of this command line) ==", ""]
    for row in option_rows(section, config):
        if row.default == _written(_MISSING):  # an option of another choice (e.g. loss.gamma under loss=ce)
            continue
        if not row.accepts:
            lines += [f"{row.key}: {row.meaning}".rstrip(": ")]
            continue
        lines += [f"  {row.key} = {row.default}    ({row.accepts})".replace("$", "$$")]
        if row.meaning:
            lines += [_wrap(row.meaning, "      ").replace("$", "$$")]
    if section.extra:
        lines += ["", "Other keys pass through unchecked (e.g. +trainer.ARG=VALUE for any Lightning Trainer argument)."]
    lines += ["", "Every command's options: docs/options.md. Hydra's own flags (--cfg job, -m, …): --hydra-help."]
    return "\n".join(lines)


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=110, initial_indent=indent, subsequent_indent=indent)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_page(conf_dir: Path | None = None) -> str:
    """``docs/options.md``: every command's options as tables, with the defaults of its default composition
    from ``conf_dir`` (default: :func:`lesion.configs.config_dir`)."""
    from hydra import compose, initialize_config_dir

    conf_dir = Path(conf_dir or config_dir())
    parts = ["# Options reference", "",
             "Generated from the options' declarations (`lesion/options.py`) and the defaults in `conf/` by "
             "`python -m lesion.option_reference`; each command's `--help` prints the same, with the defaults of "
             "that command line. Set an option with `KEY=VALUE`, choose a config group's file with `GROUP=NAME`. "
             "A default of — is an option that only another file of its group sets (e.g. `dataset=csv`'s columns, "
             "`loss=focal`'s gamma).",
             ""]
    with initialize_config_dir(str(Path(conf_dir).resolve()), version_base="1.3"):
        for command, (script, section, groups) in COMMANDS.items():
            config = OmegaConf.to_container(compose(config_name=command), resolve=False)
            parts += [f"## {script}", "", section.doc, ""]
            for group in groups:
                names = sorted(path.stem for path in (Path(conf_dir) / group).glob("*.yaml"))
                parts += [f"- `{group}=`: {', '.join(f'`{name}`' for name in names)}"]
            parts += ["" if groups else "", "| option | default | accepts | meaning |", "|---|---|---|---|"]
            for row in option_rows(section, config):
                default = f"`{_cell(row.default)}`" if row.default else ""
                key = f"`{row.key}`" if row.accepts else f"**`{row.key}`**"
                parts += [f"| {key} | {default} | {_cell(row.accepts)} | {_cell(row.meaning)} |"]
            parts += [""]
    return "\n".join(parts).replace("\n\n\n", "\n\n").rstrip("\n") + "\n"


def register_help_resolver() -> None:
    """Let a command's config name its ``--help`` as ``hydra.help.template: ${lesion_help:COMMAND}``."""
    if not OmegaConf.has_resolver("lesion_help"):
        OmegaConf.register_new_resolver(
            "lesion_help", lambda command, _root_: help_text(command, OmegaConf.to_container(_root_, resolve=False)))


if __name__ == "__main__":
    print(reference_page(), end="")
