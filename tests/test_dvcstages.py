"""When planning generates DVC stages for plugin datasets (harness/dvcstages.py)."""

from __future__ import annotations

from pathlib import Path

from harness.dvcstages import PLUGIN_DVC, plugin_stages_needed, static_datasets


def test_stages_are_listed_only_when_a_planned_dataset_lacks_a_static_stage(tmp_path):
    static = {"digits", "mnist1d"}
    assert not plugin_stages_needed(["digits"], static, tmp_path)
    assert not plugin_stages_needed([], static, tmp_path)
    assert plugin_stages_needed(["digits", "blobs"], static, tmp_path)  # a plugin's dataset
    assert plugin_stages_needed(["digits"], None, tmp_path)              # no dvc.yaml at all


def test_an_existing_generated_stage_file_is_always_kept_up_to_date(tmp_path):
    (tmp_path / PLUGIN_DVC).parent.mkdir()
    (tmp_path / PLUGIN_DVC).write_text("stages: {}\n")
    assert plugin_stages_needed(["digits"], {"digits"}, tmp_path)


def test_the_checkout_plans_no_dataset_without_a_static_stage():
    """Every dataset of the in-repo tasks has its stage in dvc.yaml, so a dry run of the checkout
    never imports the tasks' data code to generate stages."""
    from harness.dag import datasets_of, plan

    root = Path(__file__).resolve().parents[1]
    static = static_datasets(root / "dvc.yaml")
    in_repo = sorted(d.name for d in (root / "tasks").iterdir() if (d / "task.yaml").is_file())
    planned = datasets_of(plan("small", in_repo, results_dir=root / "results"))
    assert planned and not set(planned) - static, sorted(set(planned) - static)
