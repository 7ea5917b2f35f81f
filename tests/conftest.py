"""Fixtures shared by several test modules. None is autouse: a module that wants one for all its tests says
so with `pytestmark = pytest.mark.usefixtures(...)`. Shared helper functions and constants: tests/helpers.py."""

from __future__ import annotations

import pytest

# before any test module imports it: asserts in helpers report like asserts in a test
pytest.register_assert_rewrite("helpers")


@pytest.fixture
def one_thread():
    """Tiny tensors: threads only add synchronisation (seconds on a busy 2-core machine)."""
    import torch  # here, not at the top: modules that use no torch do not import it for this file

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def float64_one_thread():
    """float64 by default and one torch thread, restored afterwards."""
    import torch

    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
