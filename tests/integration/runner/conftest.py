"""Runner fixtures live in tests/runner_support.py, shared with the sandbox tests."""

from tests.runner_support import cn_path, origin, stand_in_gateway

__all__ = ["cn_path", "origin", "stand_in_gateway"]
