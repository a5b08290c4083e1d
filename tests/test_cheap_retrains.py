"""`tfbench.sweep --retrain_cheap_choices`: on finished grid runs, the retrains of the settings the
cheaper searches would have chosen, and their test scores in the cheap-alternatives table.

Three networks' grids run through the study's executor with a fake trainer whose validation and
test scores are hand-written tables, so every choice can be worked out by hand (below).
"""


from tfbench import cheap_retrains, results, study
from tfbench.experiment import Experiment
from tfbench.regimes import trained, trainer
from tfbench.report import build, cheap_alternatives
from tfbench.settings import Runtime, TrainingSettings
from tfbench.tasks import executors, plan

RUNTIME = Runtime(verbose=False)
LRS, WDS = (0.1, 0.01, 0.001), (0.0, 1e-5)
S1, S2, S3, S4, S5, S6 = [(lr, wd) for lr in LRS for wd in WDS]
# Validation scores. A chooses S1; the VTAB subset (lr 0.01, 0.001 x wd 0, 1e-5) picks S6 on A.
# B and C choose S3 (in the VTAB subset), with S1 second; S3 ranks third on A.
VALIDATION = {"resnet50": {S1: 0.90, S2: 0.60, S3: 0.70, S4: 0.50, S5: 0.40, S6: 0.80},
              "mobilenet_v2": {S1: 0.80, S2: 0.30, S3: 0.90, S4: 0.40, S5: 0.50, S6: 0.60},
              "densenet121": {S1: 0.75, S2: 0.20, S3: 0.85, S4: 0.30, S5: 0.40, S6: 0.50}}
# Test scores of every retrain, distinct by network and setting.
TEST = {model: {s: round(0.3 + 0.1 * i + 0.01 * j, 4) for i, s in enumerate((S1, S2, S3, S4, S5, S6))}
        for j, model in enumerate(VALIDATION)}


class TableTrainer:
    chief = True

    def __init__(self, experiment, runtime=None):
        self.model = experiment.model

    def train_and_score(self, hyperparameters, fit_split, score_split, name, train_steps, schedule_steps=None,
                        continues=None):
        setting = (hyperparameters["learning_rate"], hyperparameters["weight_decay"])
        score = (TEST if score_split == "test" else VALIDATION)[self.model][setting]
        return trainer.TrialOutcome("ok", score, None, {"steps": train_steps})

    def discard(self, name):
        pass


def _experiment(folder, model, **settings):
    settings = {"search": "grid", "learning_rates": LRS, "weight_decays": WDS, **settings}
    return Experiment(regime="finetune", model=model, dataset="digits", output_dir=str(folder), batch_size=8,
                      settings=TrainingSettings(train_steps=10, **settings))


def _execute(tasks):
    with executors.LocalExecutor() as executor:
        return executors.execute(plan.Plan(tasks), tasks, executor, log=lambda line: None)


def test_the_flag_retrains_exactly_the_missing_choices_and_the_table_reads_their_scores(tmp_path, monkeypatch):
    monkeypatch.setattr(trained, "TrialTrainer", TableTrainer)
    grids = [(_experiment(tmp_path / "grid", model), RUNTIME) for model in VALIDATION]
    # A --search=none run of A's VTAB choice, in a folder beside: that setting has its retrain already.
    none = (_experiment(tmp_path / "none", "resnet50", search="none", learning_rates=(), weight_decays=(),
                        learning_rate=S6[0], weight_decay=S6[1]), RUNTIME)
    for run in grids, [none]:  # two studies: task keys are relative to the output folder
        assert _execute(study.study_plan(run).tasks).complete()

    tasks = cheap_retrains.tasks(grids, str(tmp_path))
    # By hand. Most frequent: S3 (B and C). Transfer to A: S3 (B and C); to B: A's S1 or C's S3 tie,
    # mean validation rank over A and C: S1 (1 + 2) / 2 < S3 (3 + 1) / 2, so S1; to C likewise S1.
    # Missing: A's S3 (VTAB's S6 has the none run; S1 is A's own), B's S1, C's S1 (S3 their own).
    assert sorted((t.run, t.call.arguments["hyperparameters"]["learning_rate"],
                   t.call.arguments["hyperparameters"]["weight_decay"]) for t in tasks) == [
        ("finetune/digits/densenet121", *S1), ("finetune/digits/mobilenet_v2", *S1),
        ("finetune/digits/resnet50", *S3)]
    assert {(t.kind, t.steps, t.images) for t in tasks} == {("retrain", 10, 80)}
    assert tasks[0].record.startswith(str(tmp_path / "grid" / tasks[0].run / results.CHEAP_RETRAINS_DIR))
    assert _execute(tasks).count("ran") == 3
    again = cheap_retrains.tasks(grids, str(tmp_path))  # the same plan, now finished
    assert [t.key for t in again] == [t.key for t in tasks] and all(plan.finished(t) for t in again)
    assert len(results.collect(str(tmp_path))) == 4  # the retrains are not runs

    analysis = build.analyze(results.collect(str(tmp_path)), lambda model: None, output_dir=str(tmp_path),
                             resamples=10)
    (group,) = [g for g in build.cheap_alternatives_of(analysis).groups if g.runs]
    found = {model: {c.alternative: c.test_score for c in choices} for model, _, _, choices in group.runs}
    assert found["resnet50"][cheap_alternatives.TRANSFER] == TEST["resnet50"][S3]
    assert found["resnet50"][cheap_alternatives.MOST_FREQUENT] == TEST["resnet50"][S3]
    assert found["resnet50"][cheap_alternatives.VTAB] == TEST["resnet50"][S6]
    assert found["resnet50"][cheap_alternatives.GRID] == TEST["resnet50"][S1]
    for model in ("mobilenet_v2", "densenet121"):
        assert found[model][cheap_alternatives.TRANSFER] == TEST[model][S1]
        assert found[model][cheap_alternatives.VTAB] == found[model][cheap_alternatives.GRID] == TEST[model][S3]
    rows = {row["alternative"]: row for row in group.rows()}
    mean = (TEST["resnet50"][S3] + TEST["mobilenet_v2"][S1] + TEST["densenet121"][S1]) / 3
    assert rows[cheap_alternatives.TRANSFER]["test score (%)"] == f"{100 * mean:.1f}"


def test_the_flag_refuses_overwrite(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tfbench.sweep", "--models=tiny", "--datasets=digits",
                           "--regimes=finetune", f"--output_dir={tmp_path}", "--retrain_cheap_choices",
                           "--overwrite"], capture_output=True, text=True)
    assert done.returncode == 2 and "--retrain_cheap_choices cannot be combined with --overwrite" in done.stderr
    assert list(tmp_path.iterdir()) == []
