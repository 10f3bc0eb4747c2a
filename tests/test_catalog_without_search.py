"""``catalog`` never needs ``search``: its whole test folder passes with the search app left out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_catalogue_tests_pass_without_the_search_app():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test_catalog_only", "VITRINE_EXPECT_NO_SEARCH": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/catalog"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout, result.stdout[-500:]
