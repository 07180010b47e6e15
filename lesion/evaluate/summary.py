"""Sweep summary: one table of the runs in a Hydra multirun directory.

``python -m lesion.summary MULTIRUN_DIR [--out DIR]`` writes ``summary.md`` and ``summary.csv``
(to ``--out``, default the multirun directory) and prints the Markdown table, then the
``evaluate.py`` commands of its ensembles (:func:`ensemble_commands`): the fold models of a
``dataset.fold`` sweep, and the top runs by the validation metric the table is ranked by.

Every folder holding ``.hydra/config.yaml`` is a run (the outermost one, so an ``evaluate.py``
output with its own ``.hydra`` inside a run folder stays part of that run). Runs whose configs agree
on everything but the seed and run-specific paths are one *setting*, one row: metrics are the mean
and sample standard deviation (ddof=1) over the seeds that finished. Runs of one setting with the
same seed repeat one draw: they are averaged into it first, so ``seeds`` counts distinct seeds (an
unseeded run, ``seed: null``, is a draw of its own) and the ± is a spread over seeds, never over
repeats. Rows are sorted by validation balanced accuracy (``val_metrics.json``, the value the
tested checkpoint was selected on), never by a test metric, so a sweep is chosen on validation;
ties keep the sweep's job order. Where every run chose its checkpoint by the partial AUC above 80 %
TPR (``callbacks.best_checkpoint.monitor=val/pauc80``, the ISIC 2024 metric) the rows are sorted by
validation pAUC80 instead. Two-class sweeps show ``val pAUC80`` and ``pAUC80`` columns. Settings
without validation metrics (runs older than that file) follow, by the test figure, and settings with
no finished run come last with their error.
``config_diff`` lists the config keys whose values differ between the rows (unset, i.e. null,
values are left out).

Configs are compared resolved as far as the run's record says how: references to other keys
(``${dataset.image_size}``, ``${.synthetic_n}``) and ``${hydra:…}`` (from the run's ``hydra.yaml``)
resolve to the run's values; an environment variable (``${oc.env:LESION_DATA,data}``) reads
``$LESION_DATA``, since its value at run time is not recorded (resolving it now would give today's,
not the run's). A key that needs anything else (``${now:…}``, another resolver) is left out of the
comparison, and the Markdown table says which.

An Optuna search (``hparams_search=optuna``) adds a ``trial`` column, the trial numbers of each
row's runs, and a line after the table with the study's best trial (:mod:`lesion.evaluate.study`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import Container, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lesion.errors import LesionError, exit_with
from lesion.evaluate.study import describe, read_study
from lesion.files import write_atomic
from lesion.hydra_record import dotted

CONFIG = Path(".hydra") / "config.yaml"
# ${oc.env:NAME} or ${oc.env:NAME,default}: the run's value of $NAME is not recorded.
_ENV = re.compile(r"""\$\{oc\.env:([A-Za-z_]\w*)(?:,(?:'[^']*'|"[^"]*"|[^'"{}]*))?\}""")
# ${hydra:key}: recorded in the run's hydra.yaml.
_HYDRA = re.compile(r"\$\{hydra:([\w.]+)\}")
# Any other resolver (${now:…}): what it gave the run is not recorded.
_RESOLVER = re.compile(r"\$\{[\w.]+:")
METRICS = "test_metrics.json"
VAL_METRICS = "val_metrics.json"
ERROR = "error.txt"


@dataclass
class _Run:
    """One job of the sweep: its folder (relative to the sweep), config and outcome."""

    path: Path
    config: dict  # the saved config, unresolved
    flat: dict  # the same, resolved (:func:`_resolved`), with dotted keys
    unresolved: list[str]  # the dotted keys left out of ``flat``
    choices: dict  # hydra.runtime.choices: config group → option
    overrides: list[str]
    metrics: dict | None
    error: str | None
    val_bacc: float | None  # best validation BACC, None for runs without val_metrics.json
    val_pauc80: float | None  # the same checkpoint's validation pAUC80 (two-class data), else None


def _run_specific(key: str) -> bool:
    """Seed and the run's own paths: they differ between runs of one setting."""
    return key in ("seed", "ckpt_path") or key.rsplit(".", 1)[-1].endswith("_dir")


def _text(value) -> str:
    """A config value as written on the command line: ``null``, ``true``, ``1e-05``, ``[a, b]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _natural(path: Path) -> list:
    """Sort key that puts job ``10`` after job ``9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def _job_dirs(root: Path) -> list[Path]:
    found = {config.parent.parent for config in root.rglob(CONFIG.as_posix())}
    return sorted((job for job in found if found.isdisjoint(job.parents)), key=_natural)


def _load_yaml(path: Path):
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OSError, yaml.YAMLError) as exc:
        raise LesionError(path, f"cannot read it ({exc})", "repair the file or remove the run folder") from None


def _outcome(job: Path) -> tuple[dict | None, str | None]:
    """Test metrics, or why there are none. Of ``error.txt`` and ``test_metrics.json`` the newer
    one wins, so a run resumed to success after a failure counts as finished."""
    metrics, error = job / METRICS, job / ERROR
    if error.is_file() and (not metrics.is_file() or error.stat().st_mtime >= metrics.stat().st_mtime):
        # The last line: the message itself, should the file hold a traceback.
        lines = [line.strip() for line in error.read_text().splitlines() if line.strip()]
        return None, lines[-1] if lines else f"failed ({ERROR} is empty)"
    if not metrics.is_file():
        return None, f"no {METRICS} (job did not finish)"
    try:
        return json.loads(metrics.read_text()), None
    except ValueError as exc:
        return None, f"unreadable {METRICS} ({exc})"


def _validation(job: Path) -> dict[str, float | None]:
    """``bacc`` and ``pauc80`` of the tested checkpoint from ``val_metrics.json``; ``None`` each when
    absent (older runs; pAUC80 of data with more than two classes) or unreadable."""
    try:
        found = json.loads((job / VAL_METRICS).read_text())
        return {key: None if found.get(key) is None else float(found[key]) for key in ("bacc", "pauc80")}
    except (OSError, ValueError, AttributeError, TypeError):
        return {"bacc": None, "pauc80": None}


def _recorded(value, hydra: dict, key: str = ""):
    """The saved config value at ``key`` (dotted) with what the record knows filled in: ``${oc.env:NAME,…}`` →
    ``$NAME``, ``${hydra:key}`` → the run's value. A value still calling a resolver becomes missing
    (``???``); a run-specific one (:func:`_run_specific`) reads ``<key>``, so values made from it compare
    equal across the runs of a setting."""
    if isinstance(value, dict):
        return {name: _recorded(item, hydra, f"{key}{name}.") for name, item in value.items()}
    key = key.rstrip(".")
    if _run_specific(key):
        return f"<{key}>"
    if isinstance(value, list):
        return [_recorded(item, hydra, key) for item in value]
    if not isinstance(value, str):
        return value

    def from_hydra(match: re.Match) -> str:
        found = hydra
        for part in match.group(1).split("."):
            found = found.get(part) if isinstance(found, dict) else None
        # Left as it was when unknown (or itself unresolved): it then counts as a resolver.
        return match.group(0) if found is None or "${" in str(found) else str(found)

    value = _HYDRA.sub(from_hydra, _ENV.sub(lambda match: f"${match.group(1)}", value))
    return "???" if _RESOLVER.search(value) else value


def _resolved(config: dict, hydra: dict) -> tuple[dict, list[str]]:
    """``config`` (as saved) with dotted keys, resolved as far as its record says how (:func:`_recorded`);
    and the keys it cannot resolve (missing, or interpolating one that is), which it leaves out."""
    record = OmegaConf.create(_recorded(config, hydra))
    flat, unresolved = {}, []
    for key in dotted(config):
        try:
            value = OmegaConf.select(record, key, throw_on_missing=True)
            flat[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
        except OmegaConfBaseException:
            unresolved.append(key)
    return flat, unresolved


def _load_run(job: Path, root: Path) -> _Run:
    config = _load_yaml(job / CONFIG)
    hydra_file, overrides_file = job / ".hydra" / "hydra.yaml", job / ".hydra" / "overrides.yaml"
    hydra = _load_yaml(hydra_file)["hydra"] if hydra_file.is_file() else {}
    if overrides_file.is_file():
        overrides = _load_yaml(overrides_file)
    else:
        overrides = hydra.get("overrides", {}).get("task", [])
    metrics, error = _outcome(job)
    flat, unresolved = _resolved(config, hydra)
    return _Run(path=job.relative_to(root), config=config, flat=flat, unresolved=unresolved,
                choices=hydra.get("runtime", {}).get("choices", {}), overrides=list(overrides),
                metrics=metrics, error=error, **{f"val_{key}": value for key, value in _validation(job).items()})


def _experiment(run: _Run) -> str:
    """``name`` (G9.3), else the ``experiment`` option, else the overrides other than the seed."""
    if run.config.get("name"):
        return str(run.config["name"])
    if run.choices.get("experiment"):
        return str(run.choices["experiment"])
    overrides = [o for o in run.overrides if not _run_specific(o.split("=", 1)[0].lstrip("+~"))]
    return " ".join(overrides) or "default"


def _balancing(balance: dict | None) -> str:
    """``augment 0.5 + downsample NV→50% + SMOTE-Tomek``, or ``none``.

    A step is off while its block is null or, as in ``conf/balance/none.yaml``, while its switch
    is unset: ``downsample.class``, ``augment.target``, ``smote_tomek.enabled``.
    """
    balance = balance or {}
    steps = []
    if (target := (balance.get("augment") or {}).get("target")) is not None:
        steps.append(f"augment {_text(target)}")
    down = balance.get("downsample") or {}
    if down.get("class") is not None:
        if down.get("to") is not None:
            steps.append(f"downsample {down['class']}→{down['to']}")
        else:
            steps.append(f"downsample {down['class']}→{float(down.get('fraction', 0.5)) * 100:g}%")
    if balance.get("class_weight"):
        steps.append(f"class weights ({_text(balance['class_weight']).replace('_', ' ')})")
    if balance.get("sampler"):
        steps.append("weighted sampler")
    smote = balance.get("smote_tomek")
    if isinstance(smote, dict) and smote.get("enabled", True):
        steps.append("SMOTE-Tomek")
    return " + ".join(steps) or "none"


def _loss(run: _Run) -> str:
    """``loss.name`` with ``gamma=…`` for focal loss; older configs without it: the ``loss`` option,
    else the class name of ``loss._target_``."""
    loss = run.config.get("loss") or {}
    name = loss.get("name") or run.choices.get("loss") or str(loss.get("_target_") or "").rsplit(".", 1)[-1]
    return f"{name} gamma={_text(loss['gamma'])}" if loss.get("gamma") is not None else name


def _setting(run: _Run) -> tuple:
    return tuple(sorted((k, _text(v)) for k, v in run.flat.items() if not _run_specific(k)))


def _draw(run: _Run) -> str:
    """What a run drew at random: its seed; an unseeded run (``seed: null``) drew on its own."""
    seed = run.config.get("seed")
    return f"run {run.path.as_posix()}" if seed is None else f"seed {_text(seed)}"


def _over_seeds(runs: list[_Run], values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) over the runs' draws (:func:`_draw`) of ``values`` (one per run,
    NaN where missing), the runs of one draw averaged first."""
    per_draw = pd.Series(values, dtype=float).groupby([_draw(run) for run in runs], sort=False).mean().dropna()
    return per_draw.mean(), per_draw.std(ddof=1)


def _varying_keys(configs: list[dict]) -> list[str]:
    """Dotted keys whose value (or presence) differs between ``configs``; ``name`` is the row id."""
    keys = dict.fromkeys(key for config in configs for key in config)
    return [key for key in keys if key != "name" and not _run_specific(key)
            and len({(key in config, _text(config.get(key))) for config in configs}) > 1]


def _diff(flat: dict, keys: list[str]) -> str:
    parts = []
    for key in keys:
        if flat.get(key) is None:
            continue
        value = _text(flat[key])
        parts.append(f"{key}={value.rsplit('.', 1)[-1] if key.endswith('_target_') else value}")
    return ", ".join(parts)


def _status(runs: list[_Run]) -> str:
    failed = [run for run in runs if run.error is not None]
    if not failed:
        return "ok"
    if len(runs) == 1:
        return failed[0].error
    seeds_by_error: dict[str, list[str]] = {}
    for run in failed:
        seeds_by_error.setdefault(run.error, []).append(_text(run.config.get("seed")))
    errors = "; ".join(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}: {error}"
                       for error, seeds in seeds_by_error.items())
    return f"{len(failed)} of {len(runs)} failed: {errors}"


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _row(runs: list[_Run], classes: list[str], diff_keys: list[str], trials: dict[str, int] | None,
         two_class: bool) -> dict:
    first, finished = runs[0], [run for run in runs if run.metrics is not None]
    row = {"experiment": _experiment(first), "seeds": len({_draw(run) for run in finished}), "runs": len(finished)}
    row["val_bacc_mean"], row["val_bacc_std"] = _over_seeds(finished, [_number(run.val_bacc) for run in finished])
    if two_class:
        row["val_pauc80_mean"], row["val_pauc80_std"] = _over_seeds(
            finished, [_number(run.val_pauc80) for run in finished])
    for metric in ["bacc", "auc_macro", *(["pauc80"] if two_class else []), *(f"recall/{name}" for name in classes)]:
        row[f"{metric}_mean"], row[f"{metric}_std"] = _over_seeds(
            finished, [_number(run.metrics.get(metric)) for run in finished])
    row.update({
        "balancing": _balancing(first.config.get("balance")),
        "loss": _loss(first),
        "batch": first.flat.get("dataset.batch_size"),
        "lr": first.flat.get("optimizer.lr"),
        "seed": ", ".join(_text(run.config.get("seed")) for run in runs),
    })
    if trials is not None:
        row["trial"] = ", ".join(_text(trials.get(run.path.as_posix())) for run in runs)
    row.update({
        "run_dir": ", ".join(run.path.as_posix() for run in runs),
        "config_diff": _diff(first.flat, diff_keys),
        "status": _status(runs),
    })
    return row


def summarize(multirun_dir: str | Path) -> pd.DataFrame:
    """One row per setting of a sweep, best validation balanced accuracy first, failed settings last.

    Args:
        multirun_dir: the folder ``python train.py -m …`` wrote.

    Returns:
        Columns ``experiment``, ``seeds`` (distinct seeds of the finished runs), ``runs`` (finished
        runs), ``val_bacc_mean``/``val_bacc_std`` (over the seeds of the finished runs with
        ``val_metrics.json``; NaN without any), ``bacc_mean``/``bacc_std``,
        ``auc_macro_mean``/``_std``, two classes: ``val_pauc80_*`` and ``pauc80_*`` too,
        ``recall/<CLASS>_mean``/``_std`` in class order, ``balancing``,
        ``loss``, ``batch``, ``lr``, ``seed``, for an Optuna search ``trial`` (trial numbers), ``run_dir``
        (relative, comma-separated per seed), ``config_diff`` and ``status`` (``ok`` or the errors).
        ``attrs["unresolved"]``: the keys left out of the comparison (:func:`_resolved`);
        ``attrs["ranked_by"]``: ``bacc`` or ``pauc80`` (:func:`_ranking_metric`).

    Raises:
        LesionError: the folder does not exist or holds no run, or a run's YAML or the study is unreadable.
    """
    root = Path(multirun_dir)
    if not root.is_dir():
        raise LesionError(root, "no such directory", "pass the folder a `python train.py -m …` sweep wrote")
    jobs = _job_dirs(root)
    if not jobs:
        raise LesionError(root, f"no runs found (no folder holds {CONFIG.as_posix()})",
                          "pass the folder a `python train.py -m …` sweep wrote")
    groups: dict[tuple, list[_Run]] = {}
    for job in jobs:
        run = _load_run(job, root)
        groups.setdefault(_setting(run), []).append(run)
    classes = list(dict.fromkeys(name for runs in groups.values() for run in runs
                                 if run.metrics for name in run.metrics.get("classes", [])))
    diff_keys = _varying_keys([runs[0].flat for runs in groups.values()])
    study = read_study(root)
    two_class = len(classes) == 2
    rows = [_row(runs, classes, diff_keys, None if study is None else study.trials, two_class)
            for runs in groups.values()]
    ranked_by = _ranking_metric(groups.values()) if two_class else "bacc"
    # Validation only ranks the validated settings (a test metric must not pick among them); the
    # others keep the test ranking older sweeps had. Stable sort: ties keep the sweep's job order.
    rows.sort(key=lambda row: (0, -row[f"val_{ranked_by}_mean"]) if not math.isnan(row[f"val_{ranked_by}_mean"])
              else (1 + math.isnan(row[f"{ranked_by}_mean"]), -row[f"{ranked_by}_mean"]))
    frame = pd.DataFrame(rows)
    frame.attrs["ranked_by"] = ranked_by
    frame.attrs["unresolved"] = sorted({key for runs in groups.values() for run in runs for key in run.unresolved
                                        if not _run_specific(key)})
    return frame


def _ranking_metric(settings) -> str:
    """``pauc80`` when every run chose its checkpoint by validation pAUC80
    (``callbacks.best_checkpoint.monitor=val/pauc80``), else ``bacc``: a sweep is ranked by what its runs
    were selected on."""
    monitors = {run.flat.get("callbacks.best_checkpoint.monitor") for runs in settings for run in runs}
    return "pauc80" if monitors == {"val/pauc80"} else "bacc"


TOP_K = 3
_TITLES = {"val_bacc": "val BACC", "val_pauc80": "val pAUC80", "bacc": "BACC", "auc_macro": "AUC", "pauc80": "pAUC80"}


def ensemble_commands(multirun_dir: str | Path, top_k: int = TOP_K) -> list[str]:
    """``evaluate.py`` commands for the ensembles of a sweep: per setting trained on every fold k/K of a
    ``dataset.fold`` sweep, its K fold models on the test split; and the ``top_k`` finished runs with
    the best validation BACC (of the best run's classes). Runs of one setting and seed repeat one
    model: only the first of them is a member."""
    root = Path(multirun_dir)
    runs = [_load_run(job, root) for job in _job_dirs(root)]
    distinct: dict[tuple[tuple, str], _Run] = {}
    for run in runs:
        if run.metrics and (root / run.path / "checkpoints" / "best.ckpt").is_file():
            distinct.setdefault((_setting(run), _draw(run)), run)
    done = list(distinct.values())
    commands = []
    folds: dict[tuple, list[_Run]] = {}
    for run in done:
        fold = run.flat.get("dataset.fold")
        if fold:
            key = tuple(sorted((k, _text(v)) for k, v in run.flat.items() if k != "dataset.fold" and not _run_specific(k)))
            folds.setdefault(key, []).append(run)
    for members in folds.values():
        named = sorted(str(r.flat["dataset.fold"]) for r in members)
        total = int(named[0].split("/")[1])
        if named == [f"{k}/{total}" for k in range(1, total + 1)]:
            commands.append(f"# the {total} fold models as one ensemble, on the test split\n"
                            + _evaluate_command(root, members, len(members) == len(runs)) + " split=test")
    metric = _ranking_metric([done])
    ranked = sorted((r for r in done if getattr(r, f"val_{metric}") is not None), key=lambda r: -getattr(r, f"val_{metric}"))
    if len(ranked) >= 2:
        best = [r for r in ranked if r.metrics.get("classes") == ranked[0].metrics.get("classes")][:top_k]
        if len(best) >= 2:
            commands.append(f"# the top {len(best)} runs by validation {_TITLES[metric]} as one ensemble\n"
                            + _evaluate_command(root, best, False))
    return commands


def _evaluate_command(root: Path, runs: list[_Run], whole_sweep: bool) -> str:
    if whole_sweep:
        return f"python evaluate.py ckpt={root}"
    paths = ",".join(str(root / r.path / "checkpoints" / "best.ckpt") for r in runs)
    return f"python evaluate.py 'ckpt=[{paths}]'"


def _mean_std(mean: float, std: float, finished: bool) -> str:
    if math.isnan(mean):
        return "n/a" if finished else ""
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def markdown(frame: pd.DataFrame) -> str:
    """The :func:`summarize` table as Markdown: metrics as ``mean ± std`` with 3 decimals, ``seeds`` as
    ``2 runs, 1 seed`` where runs repeat a seed; then the keys left out of the comparison, if any."""
    metrics = [column[:-len("_mean")] for column in frame.columns if column.endswith("_mean")]
    others = [column for column in frame.columns
              if column not in ("experiment", "seeds", "runs") and not column.endswith(("_mean", "_std"))]
    header = ["experiment", "seeds", *(_TITLES.get(m, m) for m in metrics),
              *(column.replace("_", " ") for column in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.to_dict("records"):
        # A missing validation figure is an older run's (no val_metrics.json): empty, not n/a (undefined).
        cells = [_cell(row["experiment"]), _seeds(row["seeds"], row["runs"]),
                 *(_mean_std(row[f"{m}_mean"], row[f"{m}_std"], row["runs"] > 0 and not m.startswith("val_"))
                   for m in metrics),
                 *(_cell(row[column]) for column in others)]
        lines.append("| " + " | ".join(cells) + " |")
    if frame.attrs.get("unresolved"):
        lines += ["", "config diff leaves out what the runs' records cannot resolve: "
                  + ", ".join(frame.attrs["unresolved"])]
    return "\n".join(lines) + "\n"


def _seeds(seeds: int, runs: int) -> str:
    """``3``, or ``2 runs, 1 seed`` when runs repeat a seed."""
    return str(seeds) if seeds == runs else f"{runs} runs, {seeds} seed{'s' if seeds != 1 else ''}"


def main(argv: list[str] | None = None) -> None:
    """Command line: write ``summary.md`` and ``summary.csv`` and print the table."""
    parser = argparse.ArgumentParser(prog="python -m lesion.summary", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path, help="folder written by `python train.py -m …`")
    parser.add_argument("--out", type=Path, help="where to write summary.md/.csv (default: MULTIRUN_DIR)")
    args = parser.parse_args(argv)
    try:
        frame = summarize(args.multirun_dir)
        study = read_study(args.multirun_dir)
    except LesionError as error:
        exit_with(error)
    out = args.out or args.multirun_dir
    table = markdown(frame)
    if study is not None:
        table += f"\n{describe(study)}\n"
    write_atomic(out / "summary.md", table)
    write_atomic(out / "summary.csv", frame.to_csv(index=False))
    print(table, end="")
    for command in ensemble_commands(args.multirun_dir):
        print(f"\n{command}")


if __name__ == "__main__":
    main()
