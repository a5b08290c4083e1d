"""Cheap alternatives read off a grid's trials: hand-built records with answers worked out by hand
or by brute-force enumeration of random subsets."""

import itertools

import pytest

from tfbench import protocol
from tfbench.report import cheap_alternatives as cheap
from tfbench.report.protocol_groups import group_records

STEPS = 100
RETRAIN = 100


def record(model, scores, search="grid", dataset="d", chosen=None, test=0.5, hyperparameters=None,
           total_train_steps=None, status="ok"):
    """A fine-tune run record; `scores` maps (lr, wd) to a validation score (None: diverged)."""
    trials = [{"trial_id": f"t{i}", "hyperparameters": {"learning_rate": lr, "weight_decay": wd},
               "train_steps": STEPS, "rung": 0, "status": "ok" if v is not None else "diverged",
               "reason": None, "validation_score": v} for i, ((lr, wd), v) in enumerate(scores.items())]
    if chosen is None and scores:
        chosen = max((s for s in scores if scores[s] is not None), key=lambda s: scores[s])
    return {"experiment": {"regime": "finetune", "dataset": dataset, "model": model, "seed": 0,
                           "batch_size": 32, "image_size": None, "precision": "float32",
                           "settings": {"search": search, "train_steps": STEPS}},
            "status": status, "trials": trials, "test_score": test, "training": {"steps": RETRAIN},
            "hyperparameters": hyperparameters or {"learning_rate": chosen[0], "weight_decay": chosen[1]},
            "total_train_steps": total_train_steps or STEPS * len(scores) + RETRAIN}


def analyze(records):
    groups = group_records(records)
    return cheap.analyze(groups, {}, records)


def by_name(choices):
    return {c.alternative: c for c in choices}


def test_random_search_expectation_matches_brute_force_enumeration():
    # Six settings with a tie and a diverged trial (never chosen: five scored trials compete).
    scores = {(1e-3, 0.0): 0.70, (1e-3, 1e-5): 0.80, (1e-2, 0.0): 0.75, (1e-2, 1e-5): 0.80,
              (1e-1, 0.0): 0.60, (1e-1, 1e-5): None}
    (group,) = analyze([record("a", scores)]).groups
    found = by_name(group.runs[0][3])
    scored = [v for v in scores.values() if v is not None]
    for k in (1, 4, 8, 16):
        subsets = list(itertools.combinations(scored, min(k, len(scored))))
        regret = sum(100 * (0.80 - max(s)) for s in subsets) / len(subsets)
        rank = sum(1 + sum(v > max(s) for v in scored) for s in subsets) / len(subsets)
        choice = found[f"random search, k = {k}"]
        assert choice.regret == pytest.approx(regret) and choice.rank == pytest.approx(rank), k
        # min(k, 5) of the 6 trials' steps and one retrain, over all 6 and the retrain
        assert choice.share == pytest.approx((6 * STEPS * min(k, 5) / 6 + RETRAIN) / (6 * STEPS + RETRAIN))
    assert found["random search, k = 1"].regret == pytest.approx(100 * (0.80 - sum(scored) / 5))


def test_best_of_random_k_probabilities_sum_to_one_and_match_counts():
    n, k = 7, 3
    counts = [0] * n
    for subset in itertools.combinations(range(n), k):
        counts[min(subset)] += 1  # position 0 is the best
    total = sum(counts)
    assert cheap.best_of_random_k(n, k) == pytest.approx([c / total for c in counts])


def test_vtab_subset_picks_the_grid_points_nearest_vtabs_sweep():
    paper = cheap.Grid({}, {(lr, wd): STEPS for lr in protocol.FINETUNE_LEARNING_RATES
                            for wd in protocol.FINETUNE_WEIGHT_DECAYS}, RETRAIN)
    assert sorted(cheap.vtab_subset(paper)) == [(0.001, 0.0), (0.001, 1e-5), (0.01, 0.0), (0.01, 1e-5)]
    # The small scratch grid has no 0.001 nor 0: the next nearest on a log scale.
    small = cheap.Grid({}, {(lr, wd): STEPS for lr in (1e-2, 1e-1, 1.0) for wd in (1e-4, 1e-3)}, RETRAIN)
    assert sorted(cheap.vtab_subset(small)) == [(0.01, 1e-4), (0.01, 1e-3), (0.1, 1e-4), (0.1, 1e-3)]
    assert cheap.vtab_subset(cheap.Grid({}, {(0.01, 0.0): STEPS, (0.1, 0.0): STEPS}, RETRAIN)) == []


def test_every_alternative_on_a_hand_built_study():
    grid = [(lr, wd) for lr in (1e-3, 1e-2, 1e-1) for wd in (1e-5, 0.0)]
    # Network a: best at (0.1, 0); the VTAB subset (lr 1e-3, 1e-2) x (1e-5, 0) is best at (0.01, 1e-5).
    a = dict(zip(grid, [0.50, 0.55, 0.70, 0.60, 0.65, 0.80]))
    # Networks b and c choose (0.01, 1e-5); d on another dataset chooses (0.001, 0).
    b = dict(zip(grid, [0.40, 0.45, 0.90, 0.50, 0.60, 0.70]))
    c = dict(zip(grid, [0.30, 0.35, 0.95, 0.40, 0.50, 0.60]))
    d = dict(zip(grid, [0.30, 0.99, 0.40, 0.40, 0.50, 0.60]))
    retrain_of_transfer = record("a", {}, search="none", test=0.61,
                                 hyperparameters={"learning_rate": 0.01, "weight_decay": 1e-5})
    halving = record("a", {}, search="halving", test=0.77, total_train_steps=300,
                     hyperparameters={"learning_rate": 0.1, "weight_decay": 1e-5})
    hyperrule = record("a", {}, search="hyperrule", test=0.70, total_train_steps=50,
                       hyperparameters={"learning_rate": 0.003, "weight_decay": 0.0})  # off the grid
    records = [record("a", a, test=0.79), record("b", b), record("c", c), record("d", d, dataset="e"),
               retrain_of_transfer, halving, hyperrule]
    groups = {g.slug: g for g in analyze(records).groups}
    (grid_group,) = [g for g in groups.values() if g.runs]
    found = by_name(next(cs for m, _, _, cs in grid_group.runs if m == "a"))
    total = 6 * STEPS + RETRAIN
    assert (found[cheap.GRID].regret, found[cheap.GRID].rank, found[cheap.GRID].share,
            found[cheap.GRID].test_score) == (0.0, 1, 1.0, 0.79)
    vtab = found[cheap.VTAB]
    assert (vtab.setting, vtab.regret, vtab.rank) == ("lr 0.01, wd 1e-05", pytest.approx(10.0), 2)
    assert vtab.share == pytest.approx((4 * STEPS + RETRAIN) / total) and vtab.test_score == 0.61
    transfer = found[cheap.TRANSFER]  # b and c on the same dataset; d is on another
    assert (transfer.setting, transfer.regret, transfer.rank) == ("lr 0.01, wd 1e-05", pytest.approx(10.0), 2)
    assert transfer.share == pytest.approx(RETRAIN / total) and transfer.test_score == 0.61
    # Chosen: a (0.1, 0), b and c (0.01, 1e-5), d (0.001, 0): the most frequent is b's and c's.
    assert found[cheap.MOST_FREQUENT].setting == "lr 0.01, wd 1e-05"
    half = found["halving"]
    assert (half.regret, half.rank, half.share, half.test_score) == (
        pytest.approx(15.0), 3, pytest.approx(300 / total), 0.77)
    rule = found["hyperrule"]
    assert (rule.regret, rule.rank, rule.share, rule.test_score) == (None, None, pytest.approx(50 / total), 0.70)
    assert found["random search, k = 1"].test_score is None  # most settings have no retrain
    rows = {r["alternative"]: r for r in grid_group.rows()}
    # Over a, b, c, d: d alone has no other network on its dataset.
    assert rows[cheap.TRANSFER]["validation regret (points)"].endswith("(3 of 4 runs)")
    assert rows[cheap.GRID]["share of the grid's steps"] == "1.000"
    assert rows[cheap.TRANSFER]["choice"] == rows[cheap.VTAB]["choice"] == "varies by run"
    # The halving run's own group, and the search=none group, have no grid: said, not drawn.
    text = "\n".join(cheap.CheapAlternatives(tuple(groups.values())).markdown())
    assert "Not drawn: its search is 'halving'" in text and "| halving | lr 0.1, wd 1e-05 | 15.00 (1 of 4 runs) |" in text


def test_consensus_breaks_ties_by_mean_validation_rank():
    first = cheap.Grid({(1, 0): 0.9, (2, 0): 0.5}, {(1, 0): 1, (2, 0): 1}, 1)
    second = cheap.Grid({(1, 0): 0.4, (2, 0): 0.6}, {(1, 0): 1, (2, 0): 1}, 1)
    third = cheap.Grid({(1, 0): 0.4, (2, 0): 0.3}, {(1, 0): 1, (2, 0): 1}, 1)
    # Chosen once each; (1, 0) ranks 1, 2, 1 (mean 4/3), (2, 0) 2, 1, 2 (mean 5/3).
    assert cheap.consensus([(2, 0), (1, 0)], [first, second, third]) == (1, 0)
    assert cheap.consensus([(2, 0), (1, 0), (2, 0)], [first, second, third]) == (2, 0)
