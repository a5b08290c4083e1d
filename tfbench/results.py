"""Run records: one JSON file per run, written atomically, found again to skip finished work.

Layout under the output root: `<root>/<regime>/<dataset>/<model>/record.json` for a run, and
`<run dir>/trials/<trial id>.json` for each hyperparameter trial of a search. A record is written to
a temporary file in the same folder, flushed to disk and renamed over the target, so a crash leaves
either the old complete file or the new complete file, never a partial JSON.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import socket
import sys
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional

import tfbench
from tfbench.experiment import Experiment, identity_diff

SCHEMA_VERSION = 1
STATUSES = ("ok", "diverged", "failed")
RECORD_FILE = "record.json"
TRIALS_DIR = "trials"


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


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Readers see the old file or the new one, never a partial one (temp file, fsync, rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, payload: Mapping[str, Any]) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode())


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as handle:
            record = json.load(handle)
    except json.JSONDecodeError as error:
        raise CorruptRecordError(f"run record {path} is not valid JSON ({error}); delete it or pass --overwrite") from None
    if not isinstance(record, dict) or "experiment" not in record or "status" not in record:
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


def _finished(path: str, identity: Mapping[str, Any], what: str) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        return None
    record = read_json(path)
    if record["status"] not in ("ok", "diverged"):
        return None  # a failed run is tried again
    previous = Experiment.from_dict(record["experiment"]).identity()
    differences = identity_diff(previous, identity)
    if differences:
        listed = ", ".join(f"{key}: {old} -> {new}" for key, (old, new) in differences.items())
        raise RunConflictError(
            f"a finished {what} with other settings is at {path} ({listed}); "
            "pass --overwrite to replace it or choose another --output_dir"
        )
    return record


def finished_run(experiment: Experiment) -> Optional[Dict[str, Any]]:
    """The finished record of this run, None if it must (re)run; conflicting settings raise."""
    return _finished(record_path(experiment), experiment.identity(), "run")


def finished_trial(experiment: Experiment, trial_id: str, hyperparameters: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """A finished trial of a search, reused when the run is resumed after an interruption."""
    record = _finished(trial_path(experiment, trial_id), experiment.identity(), "trial")
    if record is not None and record["hyperparameters"] != dict(hyperparameters):
        raise RunConflictError(
            f"trial {trial_path(experiment, trial_id)} holds hyperparameters {record['hyperparameters']}, "
            f"not {dict(hyperparameters)}; pass --overwrite"
        )
    return record


def collect(output_dir: str) -> List[Dict[str, Any]]:
    """Every run record under an output root (not trials), in a stable order."""
    pattern = os.path.join(glob.escape(output_dir), "*", "*", "*", RECORD_FILE)
    return [read_json(path) for path in sorted(glob.glob(pattern))]


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
                "metric": record.get("metric"),
                "test_score": record.get("test_score"),
                "status": record["status"],
                "reason": record.get("reason"),
                "hyperparameters": json.dumps(record.get("hyperparameters", {}), sort_keys=True),
                "wall_seconds": timings.get("wall_seconds"),
                "images_per_second": timings.get("images_per_second"),
            }
        )
    return rows


def print_table(rows: List[Mapping[str, Any]], file=sys.stdout) -> None:
    """A plain fixed-width table for terminals."""
    if not rows:
        print("(no runs)", file=file)
        return
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), file=file)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
