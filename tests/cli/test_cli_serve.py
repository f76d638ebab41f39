"""`modelmon serve` fits its connections to the open-file limit: the soft limit raised
towards the hard one when MODELMON_MAX_CONNECTIONS needs it, the connections lowered (with a
warning) when even the hard limit does not fit them. In a child process: limits are
per-process."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import json, resource, sys
from app.cli.serve import fit_open_files
from app.settings import Settings
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
fits = fit_open_files(Settings(max_connections=int(sys.argv[3]), db_pool_size=10))
print(json.dumps([fits, resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))
"""


def fit(soft: int, hard: int, connections: int) -> tuple[list[int], str]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(soft), str(hard), str(connections)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_the_soft_limit_is_raised_to_fit_the_connections():
    (fits, soft), _ = fit(512, 4096, 2000)
    assert fits == 2000
    assert soft == 2000 + 256 + 20  # what they need, not more


def test_a_limit_already_high_enough_is_left_alone():
    (fits, soft), _ = fit(4096, 4096, 1000)
    assert (fits, soft) == (1000, 4096)


def test_a_hard_limit_too_low_lowers_the_connections_with_a_warning():
    (fits, soft), err = fit(512, 1024, 1000)
    assert soft == 1024
    assert fits == 1024 - 256 - 20
    assert "fits 748 connections, not MODELMON_MAX_CONNECTIONS=1000" in err
