"""Test-wide guards: no network, quiet TensorFlow, a private Keras/TFDS/tfbench cache home.

Any attempt to reach a non-loopback address fails at once with a clear message, so a test that
would download weights or data (an offline `tfds.load` otherwise retries for minutes) fails fast.
"""

import os
import socket
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_HOME = tempfile.mkdtemp(prefix="tfbench-test-home-")
os.environ["KERAS_HOME"] = os.path.join(_HOME, "keras")
os.environ["TFDS_DATA_DIR"] = os.path.join(_HOME, "tfds")
os.environ["TFHUB_CACHE_DIR"] = os.path.join(_HOME, "tfhub")
os.environ["TFBENCH_CACHE"] = os.path.join(_HOME, "tfbench")
os.environ["NO_GCE_CHECK"] = "true"

import pytest  # noqa: E402


class NetworkAccessInTest(RuntimeError):
    """Raised when a test tries to reach the network."""


_LOOPBACK_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")


def _is_loopback(address) -> bool:
    if isinstance(address, (tuple, list)) and address:
        host = str(address[0])
    else:  # AF_UNIX paths and the like are local
        return True
    return host.startswith(_LOOPBACK_PREFIXES) or host == ""


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise NetworkAccessInTest(f"test tried to reach the network at {address!r}; tests run offline")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise NetworkAccessInTest(f"test tried to reach the network at {address!r}; tests run offline")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback((host,)):
        raise NetworkAccessInTest(f"test tried to resolve {host!r}; tests run offline")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def _seeded_keras():
    """Every test starts from the same seeds and a clean Keras session (when Keras is in use:
    tests that never import it do not pay for it)."""
    import sys

    keras = sys.modules.get("keras")
    if keras is not None:
        keras.utils.set_random_seed(0)
    yield
    if keras is not None:
        # free_memory=False: no gc.collect() after every test (about 0.5 s each with TensorFlow
        # loaded, most of the quick subset's time); Python's own collector still runs.
        keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray instance on this machine (2 CPUs, 2 fake GPUs: resources Ray hands out, with
    CUDA_VISIBLE_DEVICES set, whether or not a GPU exists) for every test that needs it: starting
    Ray costs about 10 s. Workers import tfbench from the working directory and the fake tasks
    from tests/."""
    ray = pytest.importorskip("ray")
    tests = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes over ~5 s (TensorFlow training, binaries in subprocesses, Ray); "
        "pytest -m 'not slow' is the quick subset for development, CI runs everything")


RAY_GROUP = "ray"  # the pytest-xdist group of every test on the shared Ray instance


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n 2 --dist loadgroup` (.ci/test), the tests on Ray run in one worker, so one
    Ray instance starts, not one per worker; and the longest tests come first (Ray's, then those
    marked slow), so the two workers end together instead of one waiting out a long tail."""
    for item in items:
        if "ray_cluster" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group(RAY_GROUP))

    def longest_first(item):
        return (0 if "ray_cluster" in item.fixturenames else 1 if item.get_closest_marker("slow") else 2)

    items.sort(key=longest_first)  # stable: file order within each rank
