"""How the probe's L2 search scales: time and peak resident memory as n, d and K grow.

One axis at a time around a base problem (n = 10,000 training examples, d = 2,048 features,
K = 100 classes, validation n / 5), plus a SUN397-sized point (75,000 x 2,048, 397 classes), on
``probe_bench.synthetic_features`` (ReLU features with a decaying spectrum). Each point runs in a
fresh process, so that its peak memory is its own:

    python bench/probe_scaling.py                      # every point; bench/results/probe_scaling.{csv,png}
    python bench/probe_scaling.py --points 1000x512x10,5000x2048x100

Memory: the process's resident set is sampled every 10 ms during the search; "search extra" is its
peak minus the resident set just before the search (features loaded, TensorFlow's runtime started
by a search on a tiny problem of the same d and K), and
"memory / features" is (features + search extra) / features, features being the float32 training
and validation matrices the search receives (the goal: at most 3); "extra / features" is the
search's own peak beside them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))  # run from a checkout

BASE = (10_000, 2_048, 100)
POINTS = (
    [(n, BASE[1], BASE[2]) for n in (1_000, 5_000, 10_000, 25_000, 75_000)]
    + [(BASE[0], d, BASE[2]) for d in (512, 1_024, 4_096)]
    + [(BASE[0], BASE[1], k) for k in (10, 397)]
    + [(75_000, 2_048, 397)]
)
COLUMNS = ("train", "dim", "classes", "val", "search", "wall_seconds", "cpu_seconds", "fits", "iterations",
           "chosen_l2", "at_grid_edge", "features_mb", "search_extra_mb", "memory_over_features", "extra_over_features")
SAMPLE_SECONDS = 0.01


class PeakResidentSet:
    """The largest resident set of this process seen while the context is open (sampled)."""

    def __enter__(self):
        import psutil

        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def measure_point(train: int, dim: int, classes: int, search: str) -> Dict[str, object]:
    """Run one search in this process and return its row."""
    sys.path.insert(0, BENCH_DIR)
    import probe_bench

    from tfbench import linear

    # TensorFlow's runtime (thread pools, kernels) costs the same at every size: start it on a tiny
    # problem first, so that the measured peak is what this problem's search adds.
    tiny = probe_bench.synthetic_features(2 * classes, classes, 0, dim, classes, seed=1)
    linear.select_l2(tiny.train_x, tiny.train_y, tiny.val_x, tiny.val_y, metric="top1", search=search)
    data = probe_bench.synthetic_features(train, train // 5, 0, dim, classes, chunk=2048)
    features_bytes = data.train_x.nbytes + data.val_x.nbytes
    wall, cpu = time.perf_counter(), time.process_time()
    with PeakResidentSet() as memory:
        result = linear.select_l2(data.train_x, data.train_y, data.val_x, data.val_y, metric="top1", search=search)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    polished = linear.L2_SCHEDULES.get(search).screening_tolerance is not None
    extra = memory.peak - memory.before
    return {
        "train": train, "dim": dim, "classes": classes, "val": train // 5, "search": search,
        "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        "fits": len(result.trials) + polished,
        "iterations": sum(t.iterations for t in result.trials) + (result.fit.iterations if polished else 0),
        "chosen_l2": result.l2, "at_grid_edge": result.at_grid_edge or "",
        "features_mb": round(features_bytes / 2**20, 1), "search_extra_mb": round(extra / 2**20, 1),
        "memory_over_features": round((features_bytes + extra) / features_bytes, 2),
        "extra_over_features": round(extra / features_bytes, 2),
    }


def _plot(rows: List[Dict[str, object]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    for column, (axis_name, label) in enumerate((("train", "training examples n"), ("dim", "feature dimension d"),
                                                 ("classes", "classes K"))):
        others = [name for name in ("train", "dim", "classes") if name != axis_name]
        base = dict(zip(("train", "dim", "classes"), BASE))
        line = sorted((r for r in rows if all(r[o] == base[o] for o in others)), key=lambda r: r[axis_name])
        if not line:
            continue
        xs = [r[axis_name] for r in line]
        axes[0, column].plot(xs, [r["wall_seconds"] for r in line], "o-", label="wall")
        axes[0, column].plot(xs, [r["cpu_seconds"] for r in line], "s--", label="cpu")
        axes[1, column].plot(xs, [r["memory_over_features"] for r in line], "o-")
        axes[1, column].axhline(3.0, color="red", linestyle=":", label="goal: 3x the features")
        for row in (0, 1):
            axes[row, column].set_xscale("log")
            axes[row, column].set_xlabel(label + " (others at the base " + "x".join(map(str, BASE)) + ")")
        axes[0, column].set_yscale("log")
        axes[0, column].set_ylabel("search seconds")
        axes[1, column].set_ylabel("(features + search peak) / features")
        axes[0, column].legend()
        axes[1, column].legend()
    figure.suptitle("tfbench fast L2 search: time and peak memory (2 shared CPU cores)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", default="", help="comma-separated NxDxK (default: every point)")
    parser.add_argument("--search", default="fast", choices=["fast", "paper"])
    parser.add_argument("--output", default=os.path.join(BENCH_DIR, "results", "probe_scaling"),
                        help="path prefix of the .csv and .png written")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one NxDxK point, measured in this process
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_point(*map(int, args.child.split("x")), args.search)), flush=True)
        return

    from tfbench import files

    points = [tuple(map(int, p.split("x"))) for p in args.points.split(",") if p] or POINTS
    rows = []
    for point in points:
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "x".join(map(str, point)),
                                "--search", args.search], capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"point {point} failed:\n{child.stderr[-2000:]}")
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(" ".join(f"{column}={rows[-1][column]}" for column in COLUMNS), flush=True)
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        files.write_bytes_atomic(args.output + ".csv", table.getvalue().encode())
        files.write_bytes_atomic(args.output + ".png", _plot(rows))


if __name__ == "__main__":
    main()
