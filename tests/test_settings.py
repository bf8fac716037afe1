"""ttlx.settings: the only reader of TTLX_* variables, and a CPU count that follows the process's affinity."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ttlx import settings
from ttlx.errors import ConfigError

PACKAGE = Path(settings.__file__).parent


def test_no_module_but_settings_reads_a_ttlx_variable():
    readers = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
               if path.name != "settings.py" and re.search(r"(environ(\.get)?\(|getenv\()\s*[\"']TTLX_",
                                                           path.read_text())]
    assert readers == []


def test_every_ttlx_variable_named_in_the_package_is_in_the_table():
    named = set()
    for path in PACKAGE.rglob("*.py"):
        named |= set(re.findall(r"\bTTLX_[A-Z_]+[A-Z]\b", path.read_text()))
    assert named <= {setting.name for setting in settings.SETTINGS}


def test_values_are_parsed_or_refused_with_the_variable_named(monkeypatch):
    monkeypatch.setenv("TTLX_LOADER_THREADS", " 3 ")
    assert settings.loader_threads() == 3
    monkeypatch.setenv("TTLX_COMPILE_HELPER", "off")
    assert settings.compile_helper() is False
    monkeypatch.setenv("TTLX_COMPILE_HELPER", "maybe")
    with pytest.raises(ConfigError, match=r"^TTLX_COMPILE_HELPER='maybe' is not a switch; set it to 1 or 0"):
        settings.compile_helper()
    monkeypatch.setenv("TTLX_COMPILATION_CACHE", "0")
    assert settings.compilation_cache_dir() is None
    monkeypatch.setenv("TTLX_PLUGINS", "a, b,")
    assert settings.plugin_packages() == {"a", "b"}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two schedulable CPUs")
def test_the_cpu_count_is_the_processs_affinity_not_the_machines():
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from ttlx import settings; " \
           "print(settings.schedulable_cpus(), os.cpu_count())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pinned, machine = map(int, done.stdout.split())
    assert pinned == 1 and machine >= 2
