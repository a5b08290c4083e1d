"""tfbench: does a better ImageNet model transfer better?

A TensorFlow/Keras benchmark that reruns Kornblith, Shlens & Le (CVPR 2019) -- ImageNet backbones x
image-classification datasets x three regimes (linear probe, fine-tune, from scratch) -- and puts any
user backbone through the same protocol.

From Python: `tfbench.probe(model, dataset, **settings)`, `tfbench.finetune(...)`,
`tfbench.scratch(...)`, `tfbench.load_results(output_dir)` and `tfbench.doctor()` (tfbench.api, loaded on first use:
importing tfbench imports neither TensorFlow nor any other tfbench module).
"""

import importlib
import sys
import types

__version__ = "0.1.0"

API = ("InvalidSettingError", "RunConflictError", "RunFailedError", "RunResult", "UnknownNameError",
       "doctor", "finetune", "load_results", "probe", "scratch")
__all__ = list(API)
# Functions named like the binaries' modules (tfbench/probe.py, ...).
_SHADOWED = ("probe", "finetune", "scratch", "doctor")


def __getattr__(name: str):
    if name in API:  # by name: every tfbench module imports this package, so it imports none
        return getattr(importlib.import_module("tfbench.api"), name)
    raise AttributeError(f"module 'tfbench' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(API))


class _Package(types.ModuleType):
    """tfbench itself: `tfbench.probe` stays the function when the binary module of the same name
    is imported (the import system binds a submodule to its package's attribute)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return  # the module stays reachable as sys.modules["tfbench." + name]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
