"""How the binaries meet the shell: help, flag-file errors, TensorFlow's start-up lines.

Each case runs a binary in a subprocess, as a user would, and reads what it printed."""

import os
import subprocess
import sys

import pytest

from tfbench import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = ["probe", "finetune", "scratch", "sweep", "report", "prepare", "imagenet_eval"]
# A binary whose work is to import TensorFlow, run one op and say so on stderr.
IMPORTS_TENSORFLOW = ("import sys; from tfbench import cli; cli.run_app(lambda: print("
                      "'answer', int(__import__('tensorflow').constant(1) + 1), file=sys.stderr))")


def _run(*command, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *command], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("binary", BINARIES)
def test_help_lists_the_binarys_flags_on_stdout_and_exits_0(binary):
    shown = _run("-m", f"tfbench.{binary}", "--help")
    assert shown.returncode == 0, shown.stderr
    flag_lines = shown.stdout.split("\nFlags:\n")[1].splitlines()
    named = [line.split(":")[0].strip() for line in flag_lines if line.startswith("  --")]
    assert "--verbose" in named and len(named) > 1 and len(set(named)) == len(named)  # each flag once
    assert max(len(line) for line in flag_lines) <= cli.HELP_WIDTH


def test_helpfull_exits_0():
    assert _run("-m", "tfbench.report", "--helpfull").returncode == 0


def test_a_missing_flagfile_is_one_plain_line(tmp_path):
    missing = tmp_path / "none.flags"
    failed = _run("-m", "tfbench.probe", f"--flagfile={missing}")
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [f"error: Unable to open flagfile: [Errno 2] No such file or "
                                          f"directory: '{missing}'"]


@pytest.mark.slow
def test_tensorflow_start_up_lines_are_left_out_and_the_rest_kept():
    quiet = _run("-c", IMPORTS_TENSORFLOW)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == ["answer 2"]



def test_model_list_fits_the_terminal():
    listed = _run("-m", "tfbench.probe", "--model=list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["model", "source", "image_size", "feature_dim", "imagenet_top1", "top1_source"]
    assert any(line.startswith("resnet50 ") for line in lines)
    assert max(len(line) for line in lines) <= cli.HELP_WIDTH


def test_dataset_list_says_which_datasets_are_prepared(tmp_path):
    info = tmp_path / "dtd" / "3.0.1" / "dataset_info.json"  # where a TFDS build keeps its description
    info.parent.mkdir(parents=True)
    info.write_text("{}")
    listed = _run("-m", "tfbench.probe", "--dataset=list", f"--data_dir={tmp_path}")
    assert listed.returncode == 0, listed.stderr
    prepared = {line.split()[0]: line.split()[-1] for line in listed.stdout.splitlines()[1:] if len(line.split()) == 6}
    assert prepared["dtd"] == "yes" and prepared["cifar10"] == "no" and prepared["digits"] == "yes"
    assert str(tmp_path) in listed.stdout
