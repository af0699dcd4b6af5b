"""keep_freed_memory: applied on Linux/glibc, switched off by the environment variable."""

import subprocess
import sys

import pytest

CODE = "from scalewise.core.allocator import keep_freed_memory as k; print(k(), k())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
@pytest.mark.parametrize("env_value, expected", [("1", "True True"), ("0", "False False")])
def test_keep_freed_memory_respects_env(env_value, expected, monkeypatch):
    monkeypatch.setenv("SCALEWISE_KEEP_FREED_MEMORY", env_value)
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected
