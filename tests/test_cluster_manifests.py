"""The deployment files in docs/cluster/ run valid tfbench commands on the repo's image: their
flags exist and parse, their files are in the image, their folders are mounted, and the plan they
run is the paper's study."""

import os
import re
import shlex

import pytest
import yaml
from absl import flags

from tfbench import study, sweep
from tfbench.tasks import plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


def _dockerfile():
    with open(os.path.join(ROOT, "Dockerfile")) as handle:
        text = handle.read()
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M).group(1)
    copied = re.findall(r"^COPY (\S+) \./\1$", text, re.M)
    return text, workdir, copied


def _manifest(name):
    with open(os.path.join(ROOT, "docs", "cluster", name)) as handle:
        return yaml.safe_load(handle)


def _rayjob():
    job = _manifest("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [group["template"]["spec"] for group in cluster["workerGroupSpecs"]]
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:2] == ["python", "-m"]
    return command[2:], pods


def _indexed_job():
    job = _manifest("indexed-job.yaml")
    assert (job["apiVersion"], job["kind"], job["spec"]["completionMode"]) == ("batch/v1", "Job", "Indexed")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container  # the image's ENTRYPOINT (python -m) runs the args
    return container["args"], [pod], job["spec"]


def _flag_values(args):
    return dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def test_the_image_serves_as_a_ray_node_and_runs_modules():
    text, workdir, copied = _dockerfile()
    assert workdir == "/opt/tfbench" and {"tfbench", "flags"} <= set(copied)
    assert 'ENTRYPOINT ["python", "-m"]' in text
    assert re.search(r"^ARG EXTRAS=\S*\bray\b", text, re.M) and '".[${EXTRAS}]"' in text
    assert "wget" in text  # KubeRay's probes


@pytest.mark.parametrize("manifest", ["rayjob", "indexed_job"])
def test_manifest_paths_are_in_the_image_or_on_mounted_volumes(manifest):
    args, pods = (_rayjob() if manifest == "rayjob" else _indexed_job())[:2]
    _, workdir, copied = _dockerfile()
    assert args[0] == "tfbench.sweep"
    for pod in pods:
        (container,) = pod["containers"]
        assert container["image"] == pods[0]["containers"][0]["image"]
        mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
        claims = {volume["name"] for volume in pod["volumes"] if "persistentVolumeClaim" in volume}
        assert {mount["name"] for mount in container["volumeMounts"]} <= claims
        for name, value in _flag_values(args[1:]).items():
            if value.startswith(workdir + "/"):  # shipped in the image: a file of the repo it copies
                relative = value[len(workdir) + 1:]
                assert relative.split("/")[0] in copied and os.path.isfile(os.path.join(ROOT, relative)), name
            elif value.startswith("/"):  # a folder the pod must share with the others
                assert any(value == m or value.startswith(m + "/") for m in mounts), (name, value, mounts)
    assert any(m == "/runs" for m in mounts)


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


def test_the_rayjob_runs_the_papers_study_with_one_gpu_per_trial(tmp_path, monkeypatch):
    args, pods = _rayjob()
    tasks, values = _plan_of(args, tmp_path, monkeypatch)
    cost = plan.cost(tasks)
    trials = 16 * 12 * (7 * 8 + 7 * 8)  # 16 networks x 12 datasets x the paper's two grids
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
    assert len(tasks) == -(-(192 + 21504 + 384) // count)  # shard 0 of the 22,080 tasks
