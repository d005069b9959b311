"""harness.plugins: discovery by entry point; a broken plugin is named and hides nothing."""

from __future__ import annotations

import pytest

from harness.config import ConfigError
from harness.plugins import discover, get_task


def test_entry_point_and_extra_tasks_are_discovered():
    tasks, _ = discover()
    assert "toy" in tasks and "noisy_labels" in tasks
    assert get_task("toy").config.name == "toy"


def test_broken_plugins_are_reported_by_name_and_do_not_hide_others(tmp_path, monkeypatch):
    pkg = tmp_path / "badyaml"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from pathlib import Path\nfrom harness.api import Task\n"
        "class T(Task):\n    root = Path(__file__).parent\ntask = T()\n")
    (pkg / "task.yaml").write_text("name: badyaml\nversion: 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HARNESS_EXTRA_TASKS", "toy=toyplugin:task;badyaml=badyaml:task;gone=no_such_module:task")
    tasks, broken = discover()
    assert "toy" in tasks
    reasons = {b.name: b.reason for b in broken}
    assert set(reasons) >= {"badyaml", "gone"}
    assert "invalid task.yaml" in reasons["badyaml"] and "paper" in reasons["badyaml"]
    assert "ModuleNotFoundError" in reasons["gone"]
    with pytest.raises(ConfigError, match="installed but broken"):
        get_task("gone")
