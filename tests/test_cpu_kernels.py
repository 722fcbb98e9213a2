"""rgd turns TF's oneDNN CPU kernels on (rgd/__init__.py) unless the user chose."""
import os
import platform
import subprocess
import sys

import pytest

PROBE = ("import rgd, tensorflow; from tensorflow.python.util import _pywrap_util_port as p; "
         "print(p.IsMklEnabled())")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="TF's oneDNN kernels are built for x86-64")
@pytest.mark.parametrize("env,expected", [({}, "True"), ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "False")])
def test_onednn_is_on_unless_the_user_turned_it_off(env, expected):
  base = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
  out = subprocess.run([sys.executable, "-c", PROBE],
                       env={**base, **env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                       capture_output=True, text=True, check=True)
  assert out.stdout.strip().splitlines()[-1] == expected
