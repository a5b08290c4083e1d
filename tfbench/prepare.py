"""Prepare the benchmark's datasets in a TFDS data directory, or audit the prepared ones; fetch
the backbones' ImageNet weights into the caches.

    python -m tfbench.prepare --datasets=all --data_dir=~/tensorflow_datasets
    python -m tfbench.prepare --models=resnet50,inception_v1 --datasets=dtd --data_dir=DIR
    python -m tfbench.prepare --datasets=fgvc_aircraft,birdsnap --data_dir=DIR --manual_dir=DIR/manual
    python -m tfbench.prepare --audit --data_dir=DIR

Preparing downloads what it can and prints, for each dataset, what it did or the exact manual
step (which file to save where), then a table of split sizes and statuses; it exits 1 unless
every dataset asked for is ready. Hosts that cannot be reached are detected in seconds, and
nothing is written for a dataset that cannot start. Rerunning is safe: prepared datasets are
kept, and an interrupted one never looks complete (see tfbench.datasets.preparation).

--models fetches each backbone's ImageNet weights into the caches every run reads (KERAS_HOME,
TFHUB_CACHE_DIR, TFBENCH_CACHE) by building it once, so that machines without network (cluster
workers) find them there; the weights come first, then the datasets, and the exit code is 1
unless both are all ready.

--audit materialises every prepared dataset and checks split sizes against the paper's table,
disjointness of train / val / test by id and by image content, label range and the class balance
of held-out splits (see tfbench.datasets.audit); it exits 1 on any failed check.
"""

from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

_ALL = "all"


def define_flags(flag_values=None) -> None:
    """Flags of this binary only, defined when it runs (other binaries have a --datasets too);
    into `flag_values` if given (a test parsing a command line), else absl's global FLAGS."""
    from absl import flags

    into = dict(flag_values=flag_values if flag_values is not None else flags.FLAGS)
    flags.DEFINE_string(
        "datasets", _ALL,
        "Comma-separated dataset names, or 'all' (every registered dataset). --dataset=list of any "
        "regime binary prints them.", **into)
    flags.DEFINE_string(
        "models", "",
        "Comma-separated backbones whose ImageNet weights to fetch into the caches (KERAS_HOME, "
        "TFHUB_CACHE_DIR, TFBENCH_CACHE) before the datasets, or 'all'; default none. "
        "--model=list of any regime binary prints them.", **into)
    flags.DEFINE_string(
        "data_dir", None,
        "TFDS data directory to prepare the datasets in (default: TFDS_DATA_DIR or "
        "~/tensorflow_datasets).", **into)
    flags.DEFINE_string(
        "manual_dir", None,
        "Folder of manually downloaded files (archives, or extracted trees such as "
        "fgvc-aircraft-2013b/ or birdsnap/); default <data_dir>/downloads/manual.", **into)
    flags.DEFINE_boolean(
        "audit", False,
        "Audit the prepared datasets instead of preparing: split sizes, disjointness by id and "
        "image content, label range, held-out class balance.", **into)
    flags.DEFINE_integer("download_retries", 3, "Retries of a transient download failure.", lower_bound=0,
                         **into)
    flags.DEFINE_float("download_timeout", 30.0, "Seconds before one download attempt times out.",
                       lower_bound=0.1, **into)
    flags.DEFINE_integer("download_workers", 8, "Parallel downloads (Birdsnap's images).", lower_bound=1,
                         **into)


def selected_datasets(value: str) -> List[str]:
    """The names --datasets asks for, each checked against the registry (a typo fails at once)."""
    from tfbench import cli, datasets

    if value.strip() == _ALL:
        return datasets.names()
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        cli.fail(f"--datasets={value!r} names no dataset; give names or '{_ALL}'")
    for name in names:
        datasets.spec(name)
    return names


def selected_models(value: str) -> List[str]:
    """The backbones --models asks for (none when empty), each checked against the registry."""
    from tfbench import backbones

    if value.strip() == _ALL:
        return backbones.names()
    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names:
        backbones.spec(name)
    return names


def fetch_weights(names: List[str]) -> bool:
    """Build each backbone with its ImageNet weights once, which leaves them in the caches its
    builder reads (a Keras file, a TF-Hub module, a TF-Slim checkpoint, a converted
    EfficientNet-Lite file); print what happened; True if every one is there."""
    if not names:
        return True
    import keras

    from tfbench import backbones

    failed = []
    for index, name in enumerate(names, 1):
        started = time.monotonic()
        try:
            backbones.build(name, pretrained=True)
        except backbones.WeightsUnavailableError as error:
            print(f"[{index}/{len(names)}] {name}: weights FAILED: {error}", flush=True)
            failed.append(name)
            continue
        finally:
            keras.backend.clear_session()  # one network at a time in memory
        print(f"[{index}/{len(names)}] {name}: weights ready ({time.monotonic() - started:.0f}s)", flush=True)
    print(f"prepare: weights of {len(names) - len(failed)} of {len(names)} models ready"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return not failed


def run_prepare(names: List[str], data_dir: str, manual_dir: Optional[str], options) -> bool:
    """Prepare each dataset in turn, print what happened, end with the table; True if all ready."""
    from tfbench import results
    from tfbench.datasets import preparation

    outcomes = []
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name}: preparing ...", flush=True)
        outcome = preparation.prepare(name, data_dir, manual_dir, options)
        first, *rest = outcome.message.splitlines() or [""]
        print(f"[{index}/{len(names)}] {name}: {outcome.status}: {first}", flush=True)
        for line in rest:
            print(f"    {line}", flush=True)
        outcomes.append(outcome)
    print()
    results.print_table([_row(outcome.dataset, outcome.sizes, outcome.status) for outcome in outcomes],
                        file=sys.stdout)
    ready = sum(outcome.ready for outcome in outcomes)
    print(f"prepare: {ready} of {len(outcomes)} datasets ready in {data_dir}"
          + ("" if ready == len(outcomes) else "; the others list the step they need above"))
    return ready == len(outcomes)


def run_audit(names: List[str], data_dir: str, explicit: bool) -> bool:
    """Audit every prepared dataset among `names`; True if every check passed. A dataset that is
    not prepared is skipped under --datasets=all and a failure when named."""
    from tfbench import datasets, results
    from tfbench.datasets import audit

    reports, not_prepared, rows = [], [], []
    for index, name in enumerate(names, 1):
        try:
            report = audit.audit(name, data_dir, progress=True)
        except datasets.DatasetNotPreparedError:
            print(f"[{index}/{len(names)}] {name}: not prepared, not audited", flush=True)
            not_prepared.append(name)
            rows.append(_row(name, None, "not prepared"))
            continue
        except Exception as error:  # pylint: disable=broad-except
            # Unreadable data fail this dataset's audit, not the others'.
            report = audit.AuditReport(name, {}, [audit.Check("readable", False, f"{type(error).__name__}: {error}")])
        for check in report.checks:
            print(f"[{index}/{len(names)}] {name}: {'ok  ' if check.passed else 'FAIL'} "
                  f"{check.name}: {check.detail}", flush=True)
        reports.append(report)
        rows.append(_row(name, report.sizes, "ok" if report.passed else
                         "FAIL: " + ", ".join(check.name for check in report.failures())))
    print()
    results.print_table(rows, file=sys.stdout)
    failed = [report.dataset for report in reports if not report.passed]
    print(f"audit: {len(reports) - len(failed)} of {len(reports)} prepared datasets pass"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; not prepared: {', '.join(not_prepared)}" if not_prepared else ""))
    return bool(reports) and not failed and not (explicit and not_prepared)


def _row(dataset: str, sizes, status: str) -> dict:
    sizes = sizes or {}  # a dataset that is not (readably) prepared has none
    return {"dataset": dataset, "train": sizes.get("train"), "val": sizes.get("val"),
            "trainval": sizes.get("trainval"), "test": sizes.get("test"), "status": status}


def main() -> None:
    from absl import flags, logging

    from tfbench import cli

    define_flags()
    FLAGS = flags.FLAGS

    def run() -> None:
        from tfbench.datasets import fetch, tfds_source

        try:
            names = selected_datasets(FLAGS.datasets)
            models = selected_models(FLAGS.models)
        except (ValueError, FileNotFoundError) as error:  # an unknown name, a bad folder:PATH
            cli.fail(str(error))
        if not FLAGS["verbosity"].present:  # TFDS logs every dataset it does not find yet
            logging.set_verbosity(logging.ERROR)
        data_dir = os.path.expanduser(tfds_source.resolve_data_dir(FLAGS.data_dir))
        if FLAGS.audit:
            if models:
                cli.fail(f"--models={FLAGS.models!r} fetches weights, which --audit does not; "
                         "run them as two commands")
            ok = run_audit(names, data_dir, explicit=FLAGS.datasets.strip() != _ALL)
        else:
            options = fetch.FetchOptions(retries=FLAGS.download_retries, timeout=FLAGS.download_timeout,
                                         workers=FLAGS.download_workers)
            manual_dir = os.path.expanduser(FLAGS.manual_dir) if FLAGS.manual_dir else None
            weights_ok = fetch_weights(models)
            ok = run_prepare(names, data_dir, manual_dir, options) and weights_ok
        sys.exit(0 if ok else cli.RUN_FAILED)

    cli.run_app(run)


if __name__ == "__main__":
    main()
