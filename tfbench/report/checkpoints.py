"""What the networks are, and where each one's ImageNet top-1 comes from.

The paper retrained all 16 networks itself with one protocol; tfbench uses public checkpoints,
trained with differing regularisation, which the paper (Appendix B) found weakens the correlation
of probe accuracy with ImageNet top-1. The report says so beside Figure 1.

A model's top-1 is measured (tfbench.imagenet_eval on the weights themselves: whole image, no crop)
or published (the checkpoint's model card). TF-Hub networks cannot be measured, so one r can mix
the two kinds; the report says when it does, and `--imagenet_top1=measured|published` keeps one
kind (a model without a value of that kind is left out of r, as one with no top-1 is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

from tfbench.report.analysis import REGISTRY_SOURCE, ImageNetTop1
from tfbench.report.cells import markdown_table, percent

ANY, MEASURED, PUBLISHED = "any", "measured", "published"
KINDS = (ANY, MEASURED, PUBLISHED)

NOTE = ("The networks are public checkpoints, not the paper's: the paper retrained all 16 networks "
        "itself with one protocol, and reports (Appendix B) that public checkpoints, trained with "
        "differing regularisation, weaken the correlation of probe accuracy with ImageNet top-1.")


def keep_kind(top1: Mapping[str, ImageNetTop1], kind: str,
              published: Callable[[str], Optional[float]]) -> Dict[str, ImageNetTop1]:
    """Each model's top-1 of one kind: MEASURED drops published values; PUBLISHED replaces a
    measured value with `published(model)` (the registry's); ANY keeps every value."""
    if kind == ANY:
        return dict(top1)
    kept = {}
    for model, value in top1.items():
        if kind == MEASURED:
            kept[model] = value if value.measured else ImageNetTop1(None, "no measured top-1 (--imagenet_top1=measured)", False)
        elif value.measured:
            found = published(model)
            kept[model] = ImageNetTop1(found, REGISTRY_SOURCE if found is not None else
                                       "no published top-1 (--imagenet_top1=published)", False)
        else:
            kept[model] = value
    return kept


def mixing_lines(top1: Mapping[str, ImageNetTop1]) -> List[str]:
    """A sentence when the known top-1 values are of both kinds (an r over them mixes the two)."""
    kinds = [t.kind() for t in top1.values() if t.value is not None]
    if MEASURED in kinds and PUBLISHED in kinds:
        return [f"These top-1 values mix kinds: {kinds.count(MEASURED)} measured, {kinds.count(PUBLISHED)} "
                "published (model cards, other evaluation pipelines); an r over both mixes the two. "
                "`python -m tfbench.report --imagenet_top1=measured` (or `published`) uses one kind."]
    return []


@dataclass(frozen=True)
class Top1Used:
    """The report's section on the ImageNet top-1 of each model: its value, kind and source."""

    top1: Mapping[str, ImageNetTop1]  # by model
    labels: Mapping[str, str]

    def rows(self) -> List[Dict[str, str]]:
        return [{"model": model, "shown as": self.labels.get(model, model),
                 "ImageNet top-1 (%)": percent(top1.value), "kind": top1.kind(), "source": top1.source}
                for model, top1 in sorted(self.top1.items())]

    def markdown(self) -> List[str]:
        return ["## ImageNet top-1 used\n", NOTE + "\n", markdown_table(self.rows()),
                *[line + "\n" for line in mixing_lines(self.top1)]]

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {}
