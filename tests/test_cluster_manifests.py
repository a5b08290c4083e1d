"""The deployment files run valid tfbench commands on the repo's image: the Dockerfile installs the
lock file's pins as a non-root user; the Kubernetes manifests in docs/cluster/ pass the Kubernetes
API schemas (kubernetes-validate, offline), share ReadWriteMany claims, run as the image's user,
fetch the study's weights and datasets before it, and rerun a shard that exits the sweep's
INCOMPLETE code without counting a failure; the Slurm script resubmits itself on that code and
before its time limit. Their flags exist and parse, their files are in the image, their folders
are mounted, and the plan they run is the paper's study."""

import os
import re
import shlex
import signal
import subprocess
import time

import pytest
import yaml
from absl import flags
from packaging.specifiers import SpecifierSet

from tfbench import backbones, cli, datasets, prepare, study, sweep
from tfbench.tasks import plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "docs", "cluster")
IMAGE = "tfbench:latest"  # what the manifests name; docs/cluster/README.md substitutes the pushed image
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")  # the oldest the manifests need (backoffLimitPerIndex), a recent one
FLAGS = flags.FLAGS


def _read(*path):
    with open(os.path.join(ROOT, *path)) as handle:
        return handle.read()


def _dockerfile():
    text = _read("Dockerfile")
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M).group(1)
    copied = re.findall(r"^COPY (\S+) \./\1$", text, re.M)
    copied += [name for names in re.findall(r"^COPY ((?:\S+ )+)\./$", text, re.M) for name in names.split()]
    build_args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    return text, workdir, copied, build_args


def _lock_python():
    return re.search(r"--python-version (\d+\.\d+)", _read("requirements_lock.txt")).group(1)


def _documents(name):
    return [doc for doc in yaml.safe_load_all(_read("docs", "cluster", name)) if doc]


def _manifest(name):
    (document,) = _documents(name)
    return document


def _rayjob():
    job = _manifest("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [group["template"]["spec"] for group in cluster["workerGroupSpecs"]]
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:2] == ["python", "-m"]
    return command[2:], pods


def _job(name):
    job = _manifest(name)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container  # the image's ENTRYPOINT (python -m) runs the args
    return container["args"], [pod], job["spec"]


def _indexed_job():
    args, pods, spec = _job("indexed-job.yaml")
    assert spec["completionMode"] == "Indexed"
    return args, pods, spec


WORKLOADS = {"rayjob": _rayjob, "indexed_job": _indexed_job, "prefetch": lambda: _job("prefetch-job.yaml")}


def _all_pods():
    return [pod for load in WORKLOADS.values() for pod in load()[1]]


def _flag_values(args):
    return dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def _paper_flags():
    return _flag_values(line.strip() for line in _read("flags", "paper.flags").splitlines())


# --- the image ---------------------------------------------------------------------------------

def test_the_image_installs_the_lock_file_and_then_only_tfbench_itself():
    text, workdir, copied, _ = _dockerfile()
    assert workdir == "/opt/tfbench" and {"tfbench", "flags", "setup.py", "requirements_lock.txt"} <= set(copied)
    installs = re.findall(r"pip install ([^\n&]*)", text)
    assert installs == ["--no-cache-dir --require-hashes -r requirements_lock.txt", "--no-cache-dir --no-deps ."]
    assert 'ENTRYPOINT ["python", "-m"]' in text
    assert "wget" in text  # KubeRay's probes


def test_the_image_refuses_a_base_whose_python_is_not_the_locks(tmp_path):
    """The Dockerfile's guard, run here on a copy of the lock and on one for another Python."""
    text = _dockerfile()[0]
    (guard,) = re.findall(r'^RUN (python -c ".*")$', text, re.M)
    (tmp_path / "requirements_lock.txt").write_text(_read("requirements_lock.txt"))
    assert subprocess.run(["bash", "-c", guard], cwd=tmp_path).returncode == 0  # tests run the lock's Python
    (tmp_path / "requirements_lock.txt").write_text("#    uv pip compile setup.py --python-version 3.99\n")
    refused = subprocess.run(["bash", "-c", guard], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"requirements_lock.txt is for Python 3.99; the base image has {_lock_python()}"


def test_the_image_runs_as_the_non_root_user_the_manifests_name():
    text, _, _, build_args = _dockerfile()
    uid, gid = int(build_args["UID"]), int(build_args["GID"])
    assert uid > 0 and gid > 0
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["${UID}:${GID}"]  # numeric, so Kubernetes can check runAsNonRoot
    assert text.index("USER ") > max(match.start() for match in re.finditer(r"pip install|chown", text))
    assert re.search(r"chown \"\$\{UID\}:\$\{GID\}\" /data /runs /cache", text)
    for pod in _all_pods():
        context = pod["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
        assert context["runAsNonRoot"] is True


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else():
    rules = [line for line in _read(".dockerignore").splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything out, then the image's files back in
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    _, _, copied, _ = _dockerfile()
    assert included == set(copied)


def test_one_python_version_in_the_lock_bazel_setup_and_readme():
    version = _lock_python()
    bazel = re.findall(r'python_version = "([\d.]+)"', _read("MODULE.bazel"))
    assert bazel and set(bazel) == {version}
    requires = SpecifierSet(re.search(r'python_requires="([^"]+)"', _read("setup.py")).group(1))
    major, minor = map(int, version.split("."))
    assert f"{version}.0" in requires and f"{major}.{minor - 1}.99" not in requires
    stated = re.findall(r"Python (3\.\d+)", _read("README.md")) + re.findall(r"Python (3\.\d+)", _read("setup.py"))
    assert stated and set(stated) == {version}


# --- Kubernetes ----------------------------------------------------------------------------------

def _kubernetes_objects():
    """Every object the manifests create, with each RayJob pod template as a v1 PodTemplate (the
    Kubernetes schemas know no RayJob; the RayJob's own fields are checked by the tests below)."""
    objects = []
    for name in sorted(os.listdir(CLUSTER)):
        if name.endswith(".yaml"):
            for document in _documents(name):
                if document["kind"] == "RayJob":
                    _, pods = _rayjob()
                    objects += [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"ray-{i}"},
                                 "template": {"spec": pod}} for i, pod in enumerate(pods)]
                else:
                    objects.append(document)
    return objects


def test_manifests_are_valid_against_the_kubernetes_api_schemas():
    try:
        import kubernetes_validate as validator
    except ImportError:
        pytest.skip("kubernetes-validate (in the test extra: pip install -e '.[test]') is not installed")
    objects = _kubernetes_objects()
    assert {o["kind"] for o in objects} == {"PersistentVolumeClaim", "Job", "PodTemplate"}
    for version in KUBERNETES_VERSIONS:
        for document in objects:
            validator.validate(document, version, strict=True)
    misspelt = yaml.safe_load(yaml.safe_dump(_manifest("indexed-job.yaml")))
    misspelt["spec"]["podFailurePolicy"]["rules"][0]["onExitCode"] = misspelt["spec"]["podFailurePolicy"]["rules"][0].pop("onExitCodes")
    with pytest.raises(validator.ValidationError):  # strict: an unknown field is an error
        validator.validate(misspelt, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_container_runs_the_image_the_docs_substitute():
    lines = 0
    for pod in _all_pods():
        for container in pod["containers"]:
            assert container["image"] == IMAGE
    for name in os.listdir(CLUSTER):
        if name.endswith(".yaml"):
            lines += len(re.findall(rf"^\s*image: {re.escape(IMAGE)}$", _read("docs", "cluster", name), re.M))
    assert lines == sum(len(pod["containers"]) for pod in _all_pods())  # the substitution reaches them all
    readme = _read("docs", "cluster", "README.md")
    assert f'sed "s|image: {IMAGE}|image: $IMAGE|"' in readme and 'docker build -t "$IMAGE" .' in readme


def test_every_pod_shares_readwritemany_claims_and_asks_for_its_resources():
    claims = {claim["metadata"]["name"]: claim["spec"] for claim in _documents("storage.yaml")}
    assert all(spec["accessModes"] == ["ReadWriteMany"] for spec in claims.values())  # many pods, many nodes
    used = set()
    for pod in _all_pods():
        volumes = {v["name"]: v for v in pod["volumes"]}
        used |= {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
        for container in pod["containers"]:
            resources = container["resources"]
            assert resources["requests"] == resources["limits"] and {"cpu", "memory"} <= set(resources["requests"])
            assert {mount["name"] for mount in container["volumeMounts"]} <= set(volumes)
    assert used == set(claims)


def test_ray_pods_keep_the_object_store_in_a_memory_backed_dev_shm():
    job = _manifest("rayjob.yaml")["spec"]["rayClusterSpec"]
    groups = [job["headGroupSpec"]] + job["workerGroupSpecs"]
    for group in groups:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        (shm,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        volume = next(v for v in pod["volumes"] if v["name"] == shm)["emptyDir"]
        size, memory = _bytes(volume["sizeLimit"]), _bytes(container["resources"]["limits"]["memory"])
        assert volume["medium"] == "Memory" and size < memory
        assert int(group["rayStartParams"]["object-store-memory"]) < size


def _bytes(quantity):
    number, unit = re.fullmatch(r"(\d+)(Gi|Mi)?", quantity).groups()
    return int(number) * {"Gi": 2 ** 30, "Mi": 2 ** 20, None: 1}[unit]


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_manifest_paths_are_in_the_image_or_on_mounted_volumes(workload):
    args, pods = WORKLOADS[workload]()[:2]
    _, workdir, copied, _ = _dockerfile()
    assert args[0] == ("tfbench.prepare" if workload == "prefetch" else "tfbench.sweep")
    for pod in pods:
        (container,) = pod["containers"]
        mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
        for name, value in _flag_values(args[1:]).items():
            if value.startswith(workdir + "/"):  # shipped in the image: a file of the repo it copies
                relative = value[len(workdir) + 1:]
                assert relative.split("/")[0] in copied and os.path.isfile(os.path.join(ROOT, relative)), name
            elif value.startswith("/"):  # a folder the pod must share with the others
                assert any(value == m or value.startswith(m + "/") for m in mounts), (name, value, mounts)
        assert "/cache" in mounts and ("/runs" in mounts or workload == "prefetch")


def test_the_prefetch_job_fetches_the_studys_weights_and_datasets_where_workers_read_them():
    args, (pod,), _ = _job("prefetch-job.yaml")
    values = flags.FlagValues()
    prepare.define_flags(values)
    values(["tfbench.prepare", *args[1:]])  # every flag exists and parses
    paper = _paper_flags()
    assert prepare.selected_models(values.models) == paper["models"].split(",")
    assert prepare.selected_datasets(values.datasets) == paper["datasets"].split(",")
    assert all(backbones.spec(m) and datasets.spec(d) for m in paper["models"].split(",")
               for d in paper["datasets"].split(","))
    assert not values.audit and values.data_dir == "/data"
    (container,) = pod["containers"]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert writable == {"/data", "/cache"}
    assert {claims[m["name"]] for m in container["volumeMounts"]} == {"tfbench-data", "tfbench-cache"}
    caches = dict(re.findall(r"(KERAS_HOME|TFHUB_CACHE_DIR|TFBENCH_CACHE)=(\S+)", _dockerfile()[0]))
    assert len(caches) == 3 and all(path.startswith("/cache/") for path in caches.values())


def _plan_of(args, tmp_path, monkeypatch):
    """The tasks the command would run, through the sweep's own flag parsing and planning, with the
    image's paths mapped onto the repo and a temporary folder."""
    mapped = [arg.replace("=/opt/tfbench/", f"={ROOT}/").replace("=/runs/", f"={tmp_path}/runs/")
              .replace("=/data", f"={tmp_path}/data").replace("=/cache/", f"={tmp_path}/cache/")
              for arg in args[1:]]
    argv = ["tfbench.sweep", *mapped, "--dry_run"]
    monkeypatch.chdir(ROOT)  # the image's WORKDIR, where flagfiles' relative paths point
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    FLAGS.unparse_flags()
    try:
        FLAGS(argv)
        experiments = sweep.experiments_from_flags(argv)
        shard = plan.parse_shard(FLAGS.shard) if FLAGS.shard else None
        return sweep.selected_tasks(study.study_plan(experiments), shard), dict(FLAGS.flag_values_dict())
    finally:
        FLAGS.unparse_flags()


PAPER_TASKS = 192 + 21504 + 384  # probe runs, 16 networks x 12 datasets x the paper's two 7x8 grids, conclusions


def test_the_rayjob_runs_the_papers_study_with_one_gpu_per_trial(tmp_path, monkeypatch):
    args, pods = _rayjob()
    tasks, values = _plan_of(args, tmp_path, monkeypatch)
    cost = plan.cost(tasks)
    trials = 16 * 12 * (7 * 8 + 7 * 8)
    assert (cost.runs, dict(cost.tasks_by_kind)) == (16 * 12 * 3, {"probe": 192, "trial": trials, "conclude": 384})
    assert (values["executor"], values["ray_address"], values["shard"]) == ("ray", "auto", None)
    worker = pods[1]["containers"][0]["resources"]["limits"]
    assert values["gpus_per_trial"] == float(worker["nvidia.com/gpu"]) == 1
    assert values["cpus_per_trial"] <= float(worker["cpu"])


def test_the_indexed_job_runs_one_shard_per_index(tmp_path, monkeypatch):
    args, _, spec = _indexed_job()
    tasks, values = _plan_of(args, tmp_path, monkeypatch)
    count = int(values["shard"].split("/")[1])
    assert values["shard"].startswith("auto/") and count == spec["completions"] == spec["parallelism"]
    assert values["executor"] == "local" and values["wait_for_needs"] > 0
    assert len(tasks) == -(-PAPER_TASKS // count)  # shard 0 of the 22,080 tasks


def test_the_indexed_job_reruns_an_incomplete_shard_without_counting_a_failure():
    """Exit INCOMPLETE (other shards still train the trials a conclusion needs) starts a
    replacement pod uncounted; every other non-zero exit counts against backoffLimitPerIndex."""
    _, (pod,), spec = _indexed_job()
    assert pod["restartPolicy"] == "Never" and spec["backoffLimitPerIndex"] >= 1  # podFailurePolicy needs Never
    rules = spec["podFailurePolicy"]["rules"]
    on_exit = [rule for rule in rules if "onExitCodes" in rule]
    assert [(rule["action"], rule["onExitCodes"]) for rule in on_exit] == [
        ("Ignore", {"containerName": pod["containers"][0]["name"], "operator": "In", "values": [cli.INCOMPLETE]})]
    assert {cli.RUN_FAILED, cli.USAGE_ERROR}.isdisjoint(on_exit[0]["onExitCodes"]["values"])
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    readme, manifest = (" ".join(_read("docs", "cluster", name).replace("#", "").split())
                        for name in ("README.md", "indexed-job.yaml"))
    assert f"exits with code {cli.INCOMPLETE} (`tfbench.cli.INCOMPLETE`)" in readme
    assert f"exits {cli.INCOMPLETE} (tfbench.cli.INCOMPLETE)" in manifest


# --- Slurm ---------------------------------------------------------------------------------------

def _slurm(tmp_path, python_exit=0, signal_after_start=None):
    """Run slurm-array.sh as array task 5 with fake `python` (records its arguments, then exits or
    waits to be stopped) and `sbatch` (records each resubmission) first on PATH."""
    fakes = tmp_path / "bin"
    fakes.mkdir()
    body = "exec sleep 60" if signal_after_start else f"exit {python_exit}"
    (fakes / "python").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "$FAKES/python.args"\n{body}\n')
    (fakes / "sbatch").write_text('#!/bin/bash\necho "$*" >> "$FAKES/sbatch.calls"\n')
    for fake in fakes.iterdir():
        fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fakes}:{os.environ['PATH']}", FAKES=str(tmp_path), SLURM_SUBMIT_DIR=ROOT,
               SLURM_ARRAY_TASK_ID="5", DATA_DIR=f"{tmp_path}/data", OUTPUT_DIR=f"{tmp_path}/runs/paper",
               CACHE=f"{tmp_path}/cache")
    started = time.monotonic()
    process = subprocess.Popen(["bash", os.path.join(CLUSTER, "slurm-array.sh")], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if signal_after_start:
        while not (tmp_path / "python.args").exists() and time.monotonic() - started < 10:
            time.sleep(0.05)
        process.send_signal(signal_after_start)
    _, err = process.communicate(timeout=20)
    calls = (tmp_path / "sbatch.calls").read_text().splitlines() if (tmp_path / "sbatch.calls").exists() else []
    args = (tmp_path / "python.args").read_text().splitlines()
    return process.returncode, calls, args, err, time.monotonic() - started


def test_the_slurm_script_runs_one_shard_of_the_papers_study_per_array_task(tmp_path, monkeypatch):
    text = _read("docs", "cluster", "slurm-array.sh")
    assert text.startswith("#!/bin/bash\n")
    last = int(re.search(r"^#SBATCH --array=0-(\d+)$", text, re.M).group(1))
    assert re.search(rf"^INCOMPLETE={cli.INCOMPLETE}\b", text, re.M)
    code, calls, args, err, _ = _slurm(tmp_path)
    assert (code, calls) == (0, []), err
    assert args[:2] == ["-m", "tfbench.sweep"]
    tasks, values = _plan_of(args[1:], tmp_path, monkeypatch)
    assert values["shard"] == f"auto/{last + 1}" and values["wait_for_needs"] > 0
    assert values["output_dir"] == f"{tmp_path}/runs/paper" and values["executor"] == "local"
    assert len(tasks) == -(-PAPER_TASKS // (last + 1))


@pytest.mark.parametrize("python_exit,resubmitted", [(cli.INCOMPLETE, True), (cli.RUN_FAILED, False)])
def test_the_slurm_script_resubmits_an_incomplete_shard_later_and_stops_on_a_failure(tmp_path, python_exit,
                                                                                     resubmitted):
    code, calls, _, err, _ = _slurm(tmp_path, python_exit=python_exit)
    if resubmitted:
        assert (code, calls) == (0, ["--array=5 --begin=now+3600 docs/cluster/slurm-array.sh"]), err
        assert "waits for other shards' trials" in err
    else:
        assert (code, calls) == (cli.RUN_FAILED, []), err


def test_the_slurm_script_resubmits_itself_and_stops_the_sweep_before_the_time_limit(tmp_path):
    code, calls, _, err, seconds = _slurm(tmp_path, signal_after_start=signal.SIGUSR1)
    assert (code, calls) == (0, ["--array=5 --begin=now docs/cluster/slurm-array.sh"]), err
    assert "time limit near" in err and seconds < 15  # the sweep (sleeping 60 s) was stopped
    assert re.search(r"^#SBATCH --signal=B:USR1@\d+$", _read("docs", "cluster", "slurm-array.sh"), re.M)
