"""Run records: one JSON file per run, written atomically, found again to skip finished work.

Layout under the output root: `<root>/<regime>/<dataset>/<model>/record.json` for a run, and
`<run dir>/trials/<trial id>.json` for each hyperparameter trial of a search, `<run dir>/budgets/steps_<N>.json`
for the run's choice retrained on a budget of N steps. Records are written
atomically (tfbench.files), so a crash leaves the old complete file or the new one. A record that
cannot be parsed all the same (a damaged disk, a hand edit) is treated as absent, with a warning
naming it: the run or trial is done again and the record replaced, rather than crashing or being
taken as finished.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import tfbench
from tfbench.cli import warn
from tfbench.experiment import Experiment, identity, identity_diff, protocol_of

SCHEMA_VERSION = 2  # 2: typed settings, protocol, imagenet_top1, grid edges
STATUSES = ("ok", "diverged", "failed")
FINISHED_STATUSES = ("ok", "diverged")  # a failed run, trial or task is tried again
RECORD_FILE = "record.json"
RUN_FIELDS = ("experiment", "status")  # what every run and trial record holds
TRIALS_DIR = "trials"
# In a grid run's folder: the retrains of the settings cheaper searches would have chosen
# (tfbench.sweep --retrain_cheap_choices), one record each; not runs, so `collect` leaves them out.
CHEAP_RETRAINS_DIR = "cheap_retrains"
# The run's choice retrained for other step budgets (the paper's Figure 8): `<run dir>/budgets/steps_<N>.json`
# (tfbench.regimes.budgets), beside the run record, never collected as a run.
BUDGETS_DIR = "budgets"
# A fine-tune or scratch run record's validation curve of its chosen trial: [[step, score], ...]
# while training on train, the last point at the end (records written before it lack the field).
CHOSEN_CURVE = "chosen_validation_curve"


class RunConflictError(RuntimeError):
    """A finished run exists at the same place with different settings."""


class CorruptRecordError(RuntimeError):
    """A record file exists but is not a valid run record."""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> Dict[str, str]:
    """Library versions that can change a result; imported lazily so records stay cheap to read."""
    import keras
    import tensorflow as tf

    return {
        "tfbench": tfbench.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


def host() -> Dict[str, Any]:
    import tensorflow as tf

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "devices": [d.device_type + ":" + d.name.rsplit(":", 1)[-1] for d in tf.config.list_physical_devices()],
    }


def new_record(experiment: Experiment, *, metric: str, started_at: str) -> Dict[str, Any]:
    """A record skeleton: the experiment, environment and bookkeeping; the run fills the rest."""
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment.to_dict(),
        "protocol": protocol_of(experiment),
        "status": None,
        "reason": None,
        "metric": metric,
        "hyperparameters": {},
        "trials": [],
        "test_score": None,
        "timings": {},
        "versions": versions(),
        "host": host(),
        "started_at": started_at,
        "finished_at": None,
    }


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as handle:
            record = json.load(handle)
    except json.JSONDecodeError as error:
        raise CorruptRecordError(f"run record {path} is not valid JSON ({error}); delete it or pass --overwrite") from None
    if not isinstance(record, dict) or any(field not in record for field in RUN_FIELDS):
        raise CorruptRecordError(f"run record {path} lacks 'experiment'/'status'; delete it or pass --overwrite")
    return record


def finish(record: Dict[str, Any], status: str, reason: Optional[str] = None) -> Dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}; valid choices: {', '.join(STATUSES)}")
    record["status"] = status
    record["reason"] = reason
    record["finished_at"] = now()
    return record


def record_path(experiment: Experiment) -> str:
    return os.path.join(experiment.run_dir(), RECORD_FILE)


def trial_path(experiment: Experiment, trial_id: str) -> str:
    return os.path.join(experiment.run_dir(), TRIALS_DIR, trial_id + ".json")


def cheap_retrain_path(experiment: Experiment, name: str) -> str:
    return os.path.join(experiment.run_dir(), CHEAP_RETRAINS_DIR, name + ".json")


def cheap_retrain_records(output_dir: str) -> List[Dict[str, Any]]:
    """Every finished cheap-choice retrain record under output_dir's run folders."""
    found = []
    for run_folder in run_folders(output_dir):
        folder = os.path.join(run_folder, CHEAP_RETRAINS_DIR)
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json")) if os.path.isdir(folder) else []
        found += [read_record(os.path.join(folder, name), warn_if_damaged=True) for name in names]
    return [record for record in found if record is not None and record.get("status") in FINISHED_STATUSES]
def budget_path(experiment: Experiment, steps: int) -> str:
    return os.path.join(experiment.run_dir(), BUDGETS_DIR, f"steps_{steps}.json")


def read_record(path: str, warn_if_damaged: bool = False,
                fields: Tuple[str, ...] = ("status",)) -> Optional[Dict[str, Any]]:
    """The record at `path` (a run's, a trial's or any task's); None when it is absent or damaged
    (not a JSON object holding `fields`), for a damaged record is done again, never trusted. With
    `warn_if_damaged`, a damaged one gets a one-line warning naming it."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (FileNotFoundError, NotADirectoryError):  # absent, also under a file in the way
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        problem = error.__class__.__name__
    else:
        missing = [field for field in fields if not isinstance(record, dict) or field not in record]
        if not missing:
            return record
        problem = f"no {'/'.join(missing)}"
    if warn_if_damaged:
        warn(f"ignoring damaged record {path} ({problem}); it will be redone")
    return None


def _finished(path: str, wanted: Mapping[str, Any], identity_of: Callable[[Mapping[str, Any]], Dict[str, Any]],
              what: str) -> Optional[Dict[str, Any]]:
    record = read_record(path, warn_if_damaged=True, fields=RUN_FIELDS)
    if record is None or record["status"] not in FINISHED_STATUSES:
        return None  # a failed or damaged run is tried again
    differences = identity_diff(identity_of(record["experiment"]), wanted)
    if differences:
        listed = ", ".join(f"{key}: {old} -> {new}" for key, (old, new) in differences.items())
        raise RunConflictError(
            f"a finished {what} with other settings is at {path} ({listed}); "
            "pass --overwrite to replace it or choose another --output_dir"
        )
    return record


def finished_run(experiment: Experiment) -> Optional[Dict[str, Any]]:
    """The finished record of this run, None if it must (re)run; conflicting settings raise."""
    return _finished(record_path(experiment), experiment.identity(), identity, "run")


def finished_trial(experiment: Experiment, trial_id: str, hyperparameters: Mapping[str, Any],
                   trial_identity: Callable[[Mapping[str, Any]], Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A finished trial of a search, reused when the run is resumed or another search contains it.

    `trial_identity` maps an experiment dict to what the trial's result depends on.
    """
    path = trial_path(experiment, trial_id)
    record = _finished(path, trial_identity(experiment.to_dict()), trial_identity, "trial")
    if record is not None and record["hyperparameters"] != dict(hyperparameters):
        raise RunConflictError(
            f"trial {path} holds hyperparameters {record['hyperparameters']}, "
            f"not {dict(hyperparameters)}; pass --overwrite"
        )
    return record


def finished_budget(experiment: Experiment, steps: int) -> Optional[Dict[str, Any]]:
    """The finished record of the run's choice retrained for `steps` (tfbench.regimes.budgets);
    one made under other settings raises, as a run's does."""
    return _finished(budget_path(experiment, steps), experiment.identity(), identity, "budget retrain")


def run_folders(output_dir: str) -> List[str]:
    """Every run folder under output_dir, however deep its output roots lie (`runs/mini` and
    `runs/paper` side by side): each folder holding a record three levels below a root
    (`<root>/<regime>/<dataset>/<model>/record.json`), in a stable order."""
    found = []
    for folder, _, names in os.walk(output_dir):
        if RECORD_FILE in names and len(os.path.relpath(folder, output_dir).split(os.sep)) >= 3:
            found.append(folder)
    return sorted(found)


def collect(output_dir: str) -> List[Dict[str, Any]]:
    """Every readable run record under output_dir (see run_folders; trials are not runs)."""
    readable = (read_record(os.path.join(folder, RECORD_FILE), warn_if_damaged=True, fields=RUN_FIELDS)
                for folder in run_folders(output_dir))
    return [record for record in readable if record is not None]


def table(records: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One flat row per run: what a results table or a CSV needs."""
    rows = []
    for record in records:
        experiment = record["experiment"]
        timings = record.get("timings", {})
        rows.append(
            {
                "regime": experiment["regime"],
                "dataset": experiment["dataset"],
                "model": experiment["model"],
                "seed": experiment.get("seed", 0),
                "train_examples_per_class": experiment.get("train_examples_per_class"),  # None: all
                "metric": record.get("metric"),
                "test_score": record.get("test_score"),
                "status": record["status"],
                "reason": record.get("reason"),
                "hyperparameters": json.dumps(record.get("hyperparameters", {}), sort_keys=True),
                "total_train_steps": record.get("total_train_steps"),  # every trial and the retrain
                "wall_seconds": timings.get("wall_seconds"),
                "images_per_second": timings.get("images_per_second"),
            }
        )
    return rows


def print_table(rows: List[Mapping[str, Any]], file=sys.stdout, width: Optional[int] = None) -> None:
    """A plain fixed-width table for terminals; with `width`, the widest column is cut (ending
    in "...") until each line fits in that many characters."""
    if not rows:
        print("(no runs)", file=file)
        return
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    while width is not None and sum(widths) + 2 * (len(widths) - 1) > width:
        widest = max(range(len(widths)), key=widths.__getitem__)
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        widths[widest] = max(len(columns[widest]), widths[widest] - excess, 8)
        cells = [[_cut(v, widths[i]) for i, v in enumerate(row)] for row in cells]
        if widths[widest] == len(columns[widest]) or widths[widest] == 8:
            break  # the headers themselves are wider: nothing more to cut
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(), file=file)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip(), file=file)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
