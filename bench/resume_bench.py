"""What a resume costs: time from building the training stream to its first batch, at an early
and a late step, on a folder of JPEGs (the path a `folder:PATH` dataset takes).

    python bench/resume_bench.py                      # resume at step 100 vs 10,000
    python bench/resume_bench.py --early=100 --late=10000 --batch_size=32 --replay_late=1000

Reports the median over --rounds (and the fastest round: on a shared machine every other process
only adds time):
  1. tfbench's stream (examples reached by number, tfbench.preprocessing.training_batches):
     late / early (goal <= 1.2: a resume late in a schedule costs what an early one costs);
  2. for contrast, the design it replaced (decode and augment every earlier example, then skip),
     at --early and at --replay_late (a smaller step: at --late it takes minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tfbench import datasets, preprocessing  # noqa: E402

CLASSES = 4


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="JPEGs in the generated folder")
    parser.add_argument("--jpeg_size", type=int, default=256, help="side of the stored images (px)")
    parser.add_argument("--image_size", type=int, default=128, help="training resolution")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--early", type=int, default=100)
    parser.add_argument("--late", type=int, default=10_000)
    parser.add_argument("--replay_late", type=int, default=1_000,
                        help="the late step for the replaying design (0: skip that measurement)")
    parser.add_argument("--rounds", type=int, default=9)
    return parser.parse_args()


def write_folder(root: str, args) -> str:
    rng = np.random.default_rng(0)
    for index in range(args.images):
        folder = os.path.join(root, f"class{index % CLASSES}")
        os.makedirs(folder, exist_ok=True)
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((args.jpeg_size, args.jpeg_size), Image.BILINEAR)
        image.save(os.path.join(folder, f"{index:05d}.jpg"), quality=90)
    return root


def first_batch_seconds(make_stream) -> float:
    started = time.perf_counter()
    images, _ = next(iter(make_stream()))
    images.numpy()
    return time.perf_counter() - started


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory() as root:
        table = datasets.load_table(f"folder:{write_folder(root, args)}", "train")

        def stream(start):
            return lambda: preprocessing.training_batches(table, args.image_size, args.batch_size, seed=0,
                                                          start_step=start)

        def replay(start):
            return lambda: preprocessing.training_batches(table, args.image_size, args.batch_size,
                                                          seed=0).skip(start)

        first_batch_seconds(stream(0))  # warm-up: tracing, file cache
        timings = {"early": [], "late": [], "replay_early": [], "replay_late": []}
        for round_number in range(args.rounds):  # alternating which goes first: no order effect
            for name in ("early", "late") if round_number % 2 == 0 else ("late", "early"):
                timings[name].append(first_batch_seconds(stream(getattr(args, name))))
            if args.replay_late:
                timings["replay_early"].append(first_batch_seconds(replay(args.early)))
                timings["replay_late"].append(first_batch_seconds(replay(args.replay_late)))
    median = {name: statistics.median(values) for name, values in timings.items() if values}
    fastest = {name: min(values) for name, values in timings.items() if values}
    print(f"folder of {args.images} JPEGs {args.jpeg_size}px ({len(table)} in train), batch {args.batch_size}, "
          f"{args.image_size}px, median (fastest) of {args.rounds} rounds")
    print(f"tfbench: first batch at step {args.early:,}: {median['early']:.3f}s ({fastest['early']:.3f}s), "
          f"at step {args.late:,}: {median['late']:.3f}s ({fastest['late']:.3f}s); ratio late/early "
          f"{median['late'] / median['early']:.2f} ({fastest['late'] / fastest['early']:.2f}) (goal <= 1.2)")
    if args.replay_late:
        print(f"replaying design: at step {args.early:,}: {median['replay_early']:.2f}s, at step "
              f"{args.replay_late:,}: {median['replay_late']:.2f}s; ratio "
              f"{median['replay_late'] / median['replay_early']:.1f}")


if __name__ == "__main__":
    main()
