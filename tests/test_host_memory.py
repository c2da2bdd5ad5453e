"""Host malloc tuning: applied on import (Linux/glibc), and SCALING_MALLOC_TUNING=0 turns it off."""

import os
import subprocess
import sys

import pytest

CHECK = "import scaling.host_memory as h; print(h.keep_freed_memory())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc-only")
@pytest.mark.parametrize("env,expected", [("1", "True"), ("0", "False")])
def test_tuning_applies_unless_disabled(env, expected):
    out = subprocess.run([sys.executable, "-c", CHECK], env={**os.environ, "SCALING_MALLOC_TUNING": env},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected
