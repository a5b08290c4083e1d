"""What cheaper ways of choosing hyperparameters would have chosen, read off a finished grid.

A grid run (search "paper", "small" or "grid") scores every setting (learning rate, weight decay)
on validation, so the choice of any cheaper search that only tries some of those settings can be
read from its trials without training anything. Per protocol group of the trained regimes and per
grid run (the trial summaries its run record lists; diverged trials have no score and never win):

- VTAB's lightweight sweep: Zhai et al. 2019, "A Large-scale Study of Representation Learning
  with the Visual Task Adaptation Benchmark", sweeps 2 learning rates (0.01, 0.001) x 2 schedules.
  tfbench's adaptation (the grid has one schedule): the grid's learning rates nearest 0.01 and then
  0.001, x its weight decays nearest 0 and then 1e-5 (nearest on a log scale; 0 is nearest to 0);
  the best of those 4 trials on validation.
- Random search with k = 1, 4, 8, 16 trials drawn from the grid without replacement, as the exact
  expectation over draws: with the n scored trials sorted best first, the best of a random k-subset
  is the j-th best with probability C(n-j, k-1) / C(n, k). k >= n is the whole grid.
- Transfer: the setting chosen by the most other networks of the group on the same dataset (this
  network left out); ties go to the better mean validation rank over those networks' grids.
- Most frequent: the setting chosen most often over all the group's grid runs (ties as above).
- Halving (restarting and continuing) and hyperrule runs of the same regime, dataset, network and
  seed in the same folder: their choice looked up in the grid's trials.

For each: the validation regret in points (the grid's best validation score minus that of the
choice), the rank of the choice among the grid's scored trials (1 = the grid's choice; ties share
the better rank), and its share of the grid's training steps (the trials it trains plus one retrain
of its choice, over the grid's trials plus its retrain; halving and hyperrule: their own
total_train_steps). The test score is shown only where a record of the retrain of that exact
choice exists: the grid's own record when the choice is the grid's, a run of the same protocol but
the search (e.g. a --search=none run with those hyperparameters), or a cheap-choice retrain record
(`<run dir>/cheap_retrains/<setting>.json`, which `tfbench.sweep --retrain_cheap_choices` trains
for the single choices that have none: `missing_retrains`). Random search's expected test score
needs the record of every setting it may choose, and the flag does not train those. The table
averages each alternative over the group's grid runs; the report itself never retrains.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from tfbench.report.cells import MISSING, fixed, markdown_table, percent, plural
from tfbench.report.protocol_groups import ProtocolGroup
from tfbench.settings import TRAINED_REGIMES
from tfbench.tuning import trial_identity

GRID_SEARCHES = ("paper", "small", "grid")
COMPARED_SEARCHES = ("halving", "halving_continue", "hyperrule")
RANDOM_SEARCH_TRIALS = (1, 4, 8, 16)
VTAB_LEARNING_RATES = (0.01, 0.001)  # Zhai et al. 2019's lightweight sweep
VTAB_WEIGHT_DECAYS = (0.0, 1e-5)  # tfbench's stand-in for VTAB's two schedules
VTAB = "VTAB 2 x 2 subset"
TRANSFER = "transfer from other networks"
MOST_FREQUENT = "most frequent in the study"
GRID = "grid (reference)"
Setting = Tuple[float, float]  # (learning rate, weight decay)


def setting_of(hyperparameters: Mapping[str, Any]) -> Optional[Setting]:
    if hyperparameters.get("learning_rate") is None or hyperparameters.get("weight_decay") is None:
        return None
    return (float(f"{hyperparameters['learning_rate']:.10g}"), float(f"{hyperparameters['weight_decay']:.10g}"))


def describe(setting: Optional[Setting]) -> str:
    return MISSING if setting is None else f"lr {setting[0]:g}, wd {setting[1]:g}"


@dataclass(frozen=True)
class Grid:
    """One grid run's scored trials in grid order, and what its steps cost."""

    scores: Mapping[Setting, float]  # finished trials only
    trial_steps: Mapping[Setting, int]  # every trial, diverged ones too
    retrain_steps: int

    @property
    def total_steps(self) -> int:
        return sum(self.trial_steps.values()) + self.retrain_steps

    def best(self, settings: Sequence[Setting]) -> Optional[Setting]:
        """The best scored setting among `settings`; ties go to the earlier in grid order."""
        best = None
        for setting in (s for s in self.scores if s in settings):
            if best is None or self.scores[setting] > self.scores[best]:
                best = setting
        return best

    def regret(self, setting: Optional[Setting]) -> Optional[float]:
        """Points of validation score lost against the grid's choice; None when not scored."""
        if setting not in self.scores:
            return None
        return 100.0 * (max(self.scores.values()) - self.scores[setting])

    def rank(self, setting: Optional[Setting]) -> Optional[int]:
        """1 + the number of scored trials strictly better; None when not scored."""
        if setting not in self.scores:
            return None
        return 1 + sum(score > self.scores[setting] for score in self.scores.values())

    def share(self, trained: Sequence[Setting]) -> float:
        """Training `trained` and one retrain, over the whole grid and its retrain."""
        return (sum(self.trial_steps[s] for s in trained) + self.retrain_steps) / self.total_steps


def grid_of(record: Mapping[str, Any]) -> Grid:
    """The grid of a run record's trial summaries (its last rung: a grid has one)."""
    trials = record.get("trials") or []
    last = max((t.get("rung") or 0 for t in trials), default=0)
    default_steps = record["experiment"].get("settings", {}).get("train_steps") or 0
    scores, steps = {}, {}
    for trial in trials:
        setting = setting_of(trial.get("hyperparameters") or {})
        if setting is None or (trial.get("rung") or 0) != last:
            continue
        steps[setting] = trial.get("train_steps") or default_steps
        if trial.get("status") == "ok" and trial.get("validation_score") is not None:
            scores[setting] = float(trial["validation_score"])
    retrain = (record.get("training") or {}).get("steps") or default_steps
    return Grid(scores, steps, retrain)


def best_of_random_k(n: int, k: int) -> List[float]:
    """P(the best of a random k-subset of n ranked items is the j-th best), j = 1..n."""
    k = min(k, n)
    return [math.comb(n - j, k - 1) / math.comb(n, k) for j in range(1, n + 1)]


def nearest(values: Sequence[float], target: float) -> Optional[float]:
    """The value nearest `target` on a log scale; 0 is nearest only to 0 (and 0 to it)."""
    if target == 0.0:
        return min(values, default=None)
    positive = [v for v in values if v > 0]
    return min(positive, key=lambda v: abs(math.log(v / target)), default=None)


def vtab_subset(grid: Grid) -> List[Setting]:
    """The 2 x 2 grid points VTAB's sweep adapts to (module docstring); [] when the grid has
    fewer than 2 learning rates or 2 weight decays."""
    def pick(values: Sequence[float], targets: Sequence[float]) -> List[float]:
        chosen = []
        for target in targets:
            found = nearest([v for v in values if v not in chosen], target)
            if found is not None:
                chosen.append(found)
        return chosen

    rates = pick(sorted({s[0] for s in grid.trial_steps}), VTAB_LEARNING_RATES)
    decays = pick(sorted({s[1] for s in grid.trial_steps}), VTAB_WEIGHT_DECAYS)
    if len(rates) < 2 or len(decays) < 2:
        return []
    return [s for s in grid.trial_steps if s[0] in rates and s[1] in decays]


def consensus(chosen: Sequence[Setting], grids: Sequence[Grid]) -> Optional[Setting]:
    """The setting in `chosen` most often; ties go to the better mean validation rank over
    `grids` (a setting a grid did not score ranks below all its scored trials)."""
    if not chosen:
        return None
    counts = {s: chosen.count(s) for s in chosen}

    def mean_rank(setting: Setting) -> float:
        return sum(g.rank(setting) or len(g.scores) + 1 for g in grids) / max(len(grids), 1)

    return min(counts, key=lambda s: (-counts[s], mean_rank(s), s))


@dataclass(frozen=True)
class Choice:
    """One alternative's outcome on one grid run; regret in points, shares and scores fractions."""

    alternative: str
    setting: str
    regret: Optional[float]
    rank: Optional[float]
    share: Optional[float]
    test_score: Optional[float]

    def to_json(self) -> Dict[str, Any]:
        return {"alternative": self.alternative, "setting": self.setting, "validation_regret_points": self.regret,
                "rank": self.rank, "share_of_grid_steps": self.share, "test_score": self.test_score}


def _run_key(record: Mapping[str, Any]) -> Tuple[Any, ...]:
    e = record["experiment"]
    return e["regime"], e["dataset"], e["model"], e.get("seed", 0), e.get("train_examples_per_class")


def _search(record: Mapping[str, Any]) -> Optional[str]:
    return record["experiment"].get("settings", {}).get("search")


class TestScores:
    """Test scores of ok run records by (protocol but the search, setting): the retrain of a choice."""

    def __init__(self, records: Sequence[Mapping[str, Any]]):
        self._scores: Dict[Tuple[str, Setting], float] = {}
        for record in records:
            setting = setting_of(record.get("hyperparameters") or {})
            if record["status"] == "ok" and setting is not None and record.get("test_score") is not None:
                self._scores.setdefault((self._identity(record), setting), float(record["test_score"]))

    @staticmethod
    def _identity(record: Mapping[str, Any]) -> str:
        return json.dumps(trial_identity(record["experiment"]), sort_keys=True)

    def of(self, grid_record: Mapping[str, Any], setting: Optional[Setting]) -> Optional[float]:
        return None if setting is None else self._scores.get((self._identity(grid_record), setting))


def choices(record: Mapping[str, Any], grid: Grid, transfer: Optional[Setting], most_frequent: Setting,
            compared: Sequence[Mapping[str, Any]], tests: TestScores) -> List[Choice]:
    """Every alternative on one grid run: `transfer` is the other networks' consensus on its
    dataset (None: no other network), `compared` the halving and hyperrule records of the run."""
    def one(name: str, setting: Optional[Setting], trained: Sequence[Setting]) -> Choice:
        share = grid.share(trained) if setting is not None else None
        return Choice(name, describe(setting), grid.regret(setting), grid.rank(setting), share,
                      tests.of(record, setting))

    chosen = grid.best(list(grid.scores))
    out = [one(GRID, chosen, list(grid.trial_steps))]
    subset = vtab_subset(grid)
    out.append(one(VTAB, grid.best(subset), subset) if subset else Choice(
        VTAB, "needs 2 learning rates x 2 weight decays", None, None, None, None))
    ranked = sorted(grid.scores, key=lambda s: -grid.scores[s])
    mean_steps = sum(grid.trial_steps.values()) / max(len(grid.trial_steps), 1)
    for k in RANDOM_SEARCH_TRIALS:
        if not ranked:
            break
        chance = best_of_random_k(len(ranked), k)
        tests_of = [tests.of(record, s) for s in ranked]
        possible = [(p, t) for p, t in zip(chance, tests_of) if p > 0]
        test = sum(p * t for p, t in possible) if all(t is not None for _, t in possible) else None
        drawn = min(k, len(ranked))
        out.append(Choice(f"random search, k = {k}", f"expected over draws of {drawn} of {len(ranked)}",
                          sum(p * grid.regret(s) for p, s in zip(chance, ranked)),
                          sum(p * grid.rank(s) for p, s in zip(chance, ranked)),
                          (drawn * mean_steps + grid.retrain_steps) / grid.total_steps, test))
    out.append(one(TRANSFER, transfer, []) if transfer is not None else Choice(
        TRANSFER, "no other network on this dataset", None, None, None, None))
    out.append(one(MOST_FREQUENT, most_frequent, []))
    for other in compared:
        setting = setting_of(other.get("hyperparameters") or {})
        steps = other.get("total_train_steps")
        ok = other["status"] == "ok"
        out.append(Choice(_search(other), describe(setting), grid.regret(setting), grid.rank(setting),
                          None if steps is None else steps / grid.total_steps,
                          other.get("test_score") if ok else None))
    return out


@dataclass(frozen=True)
class GroupAlternatives:
    """One protocol group's grid runs and every alternative on each; `missing` says why none."""

    slug: str
    title: str
    runs: Tuple[Tuple[str, str, int, Tuple[Choice, ...]], ...]  # (model, dataset, seed, choices)
    missing: str = ""

    def alternatives(self) -> List[str]:
        return list(dict.fromkeys(c.alternative for *_, cs in self.runs for c in cs))

    def mean(self, alternative: str, field: str) -> Tuple[Optional[float], int]:
        values = [getattr(c, field) for *_, cs in self.runs for c in cs if c.alternative == alternative]
        known = [v for v in values if v is not None]
        return (sum(known) / len(known) if known else None), len(known)

    def rows(self) -> List[Dict[str, str]]:
        """Each alternative averaged over the runs where it is defined (counts when not all), and
        its choice when every run made the same."""
        total = len(self.runs)

        def cell(alternative: str, field: str, shown: Callable[[Optional[float]], str]) -> str:
            value, count = self.mean(alternative, field)
            return shown(value) + ("" if value is None or count == total else f" ({count} of {total} runs)")

        def setting(alternative: str) -> str:
            found = {c.setting for *_, cs in self.runs for c in cs if c.alternative == alternative}
            return found.pop() if len(found) == 1 else "varies by run"

        def decimals(count: int) -> Callable[[Optional[float]], str]:
            return lambda value: fixed(value, count)

        return [{"alternative": a, "choice": setting(a), "validation regret (points)": cell(a, "regret", decimals(2)),
                 "rank of its choice": cell(a, "rank", decimals(2)),
                 "share of the grid's steps": cell(a, "share", decimals(3)),
                 "test score (%)": cell(a, "test_score", percent)} for a in self.alternatives()]

    def to_json(self) -> Dict[str, Any]:
        return {"missing": self.missing or None,
                "runs": [{"model": m, "dataset": d, "seed": s, "choices": [c.to_json() for c in cs]}
                         for m, d, s, cs in self.runs]}


@dataclass(frozen=True)
class GridRun:
    """A grid run of a group with the group-wide choices it is compared to: the other networks'
    consensus on its dataset (None: no other network) and the group's most frequent choice."""

    record: Mapping[str, Any]
    grid: Grid
    transfer: Optional[Setting]
    most_frequent: Optional[Setting]

    def single_choices(self) -> List[Setting]:
        """The distinct settings the alternatives that choose one setting pick (VTAB 2 x 2,
        transfer, most frequent), in that order. Random search has no single choice: its expected
        test score needs every setting it may draw as best, about the grid's own cost again."""
        picked = [self.grid.best(vtab_subset(self.grid)), self.transfer, self.most_frequent]
        return list(dict.fromkeys(s for s in picked if s is not None))


def grid_runs(group: ProtocolGroup) -> List[GridRun]:
    """The group's grid runs with a scored trial, each with the group-wide choices."""
    runs = [(r, grid_of(r)) for r in group.records if grid_of(r).scores]
    chosen = {id(r): setting_of(r.get("hyperparameters") or {}) for r, _ in runs}
    study = [chosen[id(r)] for r, _ in runs if chosen[id(r)] is not None]
    most_frequent = consensus(study, [g for _, g in runs])
    out = []
    for record, grid in runs:
        e = record["experiment"]
        others = [(chosen[id(r)], g) for r, g in runs if chosen[id(r)] is not None
                  and r["experiment"]["dataset"] == e["dataset"] and r["experiment"]["model"] != e["model"]]
        out.append(GridRun(record, grid, consensus([s for s, _ in others], [g for _, g in others]), most_frequent))
    return out


def _is_grid(group: ProtocolGroup) -> bool:
    return group.settings.get("search") in GRID_SEARCHES


def analyze_group(group: ProtocolGroup, title: str, records: Sequence[Mapping[str, Any]],
                  tests: TestScores) -> GroupAlternatives:
    """The group's grid runs against every alternative; `records` are the whole folder's (for the
    halving and hyperrule runs beside them)."""
    search = group.settings.get("search")
    if not _is_grid(group):
        stated = "states no search" if search is None else f"search is {search!r}"
        return GroupAlternatives(group.slug, title, (), f"its {stated}, not a grid ({', '.join(GRID_SEARCHES)})")
    runs = grid_runs(group)
    if not runs:
        return GroupAlternatives(group.slug, title, (), "no grid run has a scored trial")
    compared: Dict[Tuple[Any, ...], List[Mapping[str, Any]]] = {}
    for other in records:
        if _search(other) in COMPARED_SEARCHES:
            compared.setdefault(_run_key(other), []).append(other)
    out = []
    for run in runs:
        e = run.record["experiment"]
        out.append((e["model"], e["dataset"], e.get("seed", 0), tuple(choices(
            run.record, run.grid, run.transfer, run.most_frequent, compared.get(_run_key(run.record), []), tests))))
    return GroupAlternatives(group.slug, title, tuple(out))


def missing_retrains(groups: Sequence[ProtocolGroup],
                     records: Sequence[Mapping[str, Any]]) -> List[Tuple[Mapping[str, Any], List[Setting]]]:
    """Each grid run of the trained groups with the single choices of the cheaper searches
    (GridRun.single_choices) that no run among `records` (the folder's) has retrained: what
    `tfbench.sweep --retrain_cheap_choices` plans (a cheap-choice retrain already recorded is a
    finished task, so that the plan, and its shards, do not change as retrains finish). Runs with
    nothing missing are left out."""
    tests = TestScores(records)
    out = []
    for group in groups:
        if group.regime not in TRAINED_REGIMES or not _is_grid(group):
            continue
        for run in grid_runs(group):
            missing = [s for s in run.single_choices() if tests.of(run.record, s) is None]
            if missing:
                out.append((run.record, missing))
    return out


@dataclass(frozen=True)
class CheapAlternatives:
    groups: Tuple[GroupAlternatives, ...]

    def figure_files(self) -> Dict[str, GroupAlternatives]:
        return {f"cheap_alternatives_{g.slug}.png": g for g in self.groups if g.runs}

    def markdown(self) -> List[str]:
        """The report's section."""
        parts = ["## Cheap alternatives to the grid search\n",
                 "What cheaper searches would have chosen, read off each grid run's validation scores "
                 "without training (tfbench.report.cheap_alternatives). VTAB 2 x 2: Zhai et al. 2019's "
                 "lightweight sweep (learning rates 0.01, 0.001 x 2 schedules), adapted by tfbench to this "
                 "grid as the learning rates nearest 0.01 and 0.001 x the weight decays nearest 0 and "
                 "1e-5. Random search: the exact expectation over draws without replacement. Transfer: "
                 "the setting most other networks chose on the dataset; most frequent: over the whole "
                 "group (ties: the better mean validation rank). Regret is in validation points against "
                 "the grid's choice; the share counts the trials trained plus one retrain. A test score "
                 "needs a retrain of that exact choice (the report does not retrain; "
                 "`tfbench.sweep --retrain_cheap_choices` retrains the single choices).\n"]
        if not self.groups:
            return parts + ["Not drawn: no fine-tune or scratch runs.\n"]
        figures = {g.slug: name for name, g in self.figure_files().items()}
        for group in self.groups:
            parts.append(f"### {group.title} (`{group.slug}`)\n")
            if group.missing:
                parts.append(f"Not drawn: {group.missing}.\n")
                continue
            parts += [f"Over {plural(len(group.runs), 'grid run')}.\n", markdown_table(group.rows()),
                      f"![Cheap alternatives, {group.slug}]({figures[group.slug]})\n"]
        return parts

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {name: figures.cheap_alternatives_figure(g) for name, g in self.figure_files().items()}

    def to_json(self) -> Dict[str, Any]:
        return {g.slug: g.to_json() for g in self.groups}


def analyze(groups: Sequence[ProtocolGroup], titles: Mapping[str, str], records: Sequence[Mapping[str, Any]],
            retrains: Sequence[Mapping[str, Any]] = ()) -> CheapAlternatives:
    """Every trained-regime group's alternatives; `titles` by slug, `records` the whole folder's,
    `retrains` the cheap-choice retrain records (their test scores only)."""
    tests = TestScores(list(records) + list(retrains))
    return CheapAlternatives(tuple(analyze_group(g, titles.get(g.slug, g.slug), records, tests)
                                   for g in groups if g.regime in TRAINED_REGIMES))
