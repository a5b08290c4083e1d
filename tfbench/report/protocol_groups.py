"""Run records grouped by protocol: the runs whose scores may share a table, an r and a figure.

A 1,000-step fine-tune beside a 20,000-step one, or features at 128 px beside features at 224 px,
measure different things; averaging or correlating them mixes protocols. Two records belong to the
same protocol when every identity setting but the per-run ones (model, dataset, seed) and the
locations is equal: PROTOCOL_FIELDS, the regime, its settings, batch size, image size, precision,
and the training subset (runs on 10 examples per class never share a table with full runs).
Per-model fields (a display name, a user model's input convention) and labels that are not
identity (the preset's name) never split a group.

Each group carries the protocol's name as its records state it ("paper", a preset's name,
"custom"; "unnamed" for records written before runs named their protocol) and a short stable id,
a digest of its settings, that tells apart groups whose names collide.

The report's sections on the groups themselves live here too: the protocols table, and the runs
that enter none of its tables.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from tfbench.experiment import identity_diff, path_component
from tfbench.report.cells import MISSING, markdown_table, plural, text
from tfbench.settings import REGIMES

TRAIN_SUBSET_FIELD = "train_examples_per_class"  # absent: the whole training set
PROTOCOL_FIELDS = ("regime", "settings", "batch_size", "image_size", "precision", TRAIN_SUBSET_FIELD)
UNNAMED = "unnamed"
ID_LENGTH = 8
SETTING_LABELS = {"l2_search": "L2 search", "bn_momentum": "batch-norm momentum", "train_steps": "training steps",
                  "init": "initialisation", "halving_eta": "halving rate", "halving_min_steps": "halving's first budget"}


class UnknownProtocolError(ValueError):
    """--protocol names no group of the folder; the message lists the valid choices."""


def protocol_key(experiment: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings a record shares with every other run of its protocol."""
    return {key: experiment[key] for key in PROTOCOL_FIELDS if key in experiment}


def protocol_id(key: Mapping[str, Any]) -> str:
    """A short digest of a protocol's settings: the same settings give the same id on any machine."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]


def protocol_name(record: Mapping[str, Any]) -> str:
    return (record.get("protocol") or {}).get("name") or UNNAMED


@dataclass(frozen=True)
class ProtocolGroup:
    """The records of one protocol. `slug` is unique in the folder: the regime alone when it has
    one protocol there, else regime and name, else regime, name and id (used in file names)."""

    id: str
    name: str
    regime: str
    key: Mapping[str, Any]
    paper_differences: Mapping[str, Any]  # setting -> {"paper": value, "run": value}
    records: Tuple[Mapping[str, Any], ...]
    slug: str

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.key.get("settings", {})


def group_records(records: Sequence[Mapping[str, Any]]) -> List[ProtocolGroup]:
    """Records by protocol, ordered by regime (probe, finetune, scratch), then name, then id.

    Records of one protocol that state different names (a preset's run beside the same settings
    given by hand) keep every name, joined by "+".
    """
    by_id: Dict[str, List[Mapping[str, Any]]] = {}
    keys: Dict[str, Dict[str, Any]] = {}
    for record in records:
        key = protocol_key(record["experiment"])
        keys.setdefault(protocol_id(key), key)
        by_id.setdefault(protocol_id(key), []).append(record)
    drafts = []
    for group_id, members in by_id.items():
        name = "+".join(sorted({protocol_name(r) for r in members}))
        differences = next(((r.get("protocol") or {}).get("differences") or {} for r in members
                            if r.get("protocol")), {})
        drafts.append((keys[group_id]["regime"], name, group_id, members, differences))
    drafts.sort(key=lambda d: (REGIMES.index(d[0]) if d[0] in REGIMES else len(REGIMES), d[0], d[1], d[2]))
    groups = []
    for regime, name, group_id, members, differences in drafts:
        same_regime = [d for d in drafts if d[0] == regime]
        if len(same_regime) == 1:
            slug = regime
        elif sum(d[1] == name for d in same_regime) == 1:
            slug = f"{regime}_{path_component(name)}"
        else:
            slug = f"{regime}_{path_component(name)}_{group_id}"
        groups.append(ProtocolGroup(group_id, name, regime, keys[group_id], differences,
                                    tuple(members), slug))
    return groups


def select_protocol(groups: Sequence[ProtocolGroup], wanted: str) -> List[ProtocolGroup]:
    """The groups a --protocol value names: every group of that protocol name (one per regime
    normally), or the one group with that id."""
    chosen = [g for g in groups if g.id == wanted or wanted in g.name.split("+")]
    if not chosen:
        names = sorted({n for g in groups for n in g.name.split("+")})
        raise UnknownProtocolError(
            f"unknown protocol {wanted!r}; valid choices: {', '.join(names)} "
            f"(names) or {', '.join(g.id for g in groups)} (ids)")
    return chosen


def differing_settings(groups: Sequence[ProtocolGroup]) -> Dict[str, Dict[str, Dict[str, str]]]:
    """For each regime with several protocols, the settings that differ between them:
    {regime: {setting: {group slug: value as JSON}}}, settings flattened as `settings.<name>`."""
    differing: Dict[str, Dict[str, Dict[str, str]]] = {}
    for regime in dict.fromkeys(g.regime for g in groups):
        first, *others = [g for g in groups if g.regime == regime]
        settings: Dict[str, Dict[str, str]] = {}
        for other in others:
            for setting, (first_value, other_value) in identity_diff(first.key, other.key).items():
                settings.setdefault(setting, {first.slug: first_value})[other.slug] = other_value
        for values in settings.values():  # a group equal to the first on that setting
            for other in others:
                values.setdefault(other.slug, values[first.slug])
        if settings:
            differing[regime] = settings
    return differing


def setting_label(key: str) -> str:
    """A run setting as the report names it: "settings.learning_rate" -> "learning rate"."""
    name = key[len("settings."):] if key.startswith("settings.") else key
    return SETTING_LABELS.get(name, name.replace("_", " "))


def setting_value(value: Any) -> str:
    """A setting's value; None is a setting the protocol leaves to its search (or does not fix)."""
    return "not fixed" if value is None else str(value)


@dataclass(frozen=True)
class Protocols:
    """The report's section on the protocols of the scored groups, and what tells apart the
    protocols of one regime."""

    groups: Tuple[ProtocolGroup, ...]
    differing: Mapping[str, Mapping[str, Mapping[str, str]]]  # differing_settings

    def rows(self) -> List[Dict[str, str]]:
        def paper_differences(g: ProtocolGroup) -> str:
            differences = sorted(g.paper_differences.items())
            if not differences:
                return "none" if g.name == "paper" else "not stated"
            return "; ".join(f"{setting_label(k)}: {setting_value(v.get('run'))} (paper: {setting_value(v.get('paper'))})"
                             for k, v in differences)

        def training_steps(g: ProtocolGroup) -> str:
            """What the protocol spent: every trial and retrain of its runs (the probe trains no steps)."""
            steps = [r["total_train_steps"] for r in g.records if r.get("total_train_steps") is not None]
            return f"{sum(steps):,} ({plural(len(steps), 'run')})" if steps else MISSING

        return [{"group": g.slug, "protocol": g.name, "id": g.id, "regime": g.regime,
                 "runs": str(len(g.records)), "training steps": training_steps(g),
                 "batch size": str(g.key.get("batch_size")),
                 "image size": str(g.key.get("image_size") or "native"),
                 "differs from the paper in": paper_differences(g)}
                for g in self.groups]

    def differing_lines(self) -> List[str]:
        """One line per regime that holds several protocols: the settings that tell them apart."""
        return [f"{regime}: several protocols, differing in " + "; ".join(
                    f"{setting} ({', '.join(f'{slug}: {value}' for slug, value in values.items())})"
                    for setting, values in settings.items())
                for regime, settings in self.differing.items()]

    def markdown(self) -> List[str]:
        return ["## Protocols\n", markdown_table(self.rows()), *[f"- {line}" for line in self.differing_lines()], ""]

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {}


@dataclass(frozen=True)
class NotCounted:
    """The report's section on the runs that enter no table: failed or diverged, with the reason."""

    failures: Tuple[Mapping[str, Any], ...]  # flat rows of the runs that are not ok

    def rows(self) -> List[Dict[str, str]]:
        return [{k: text(v) for k, v in row.items()} for row in self.failures]

    def markdown(self) -> List[str]:
        return ["## Runs not counted (failed or diverged)\n", markdown_table(self.rows())]

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {}
