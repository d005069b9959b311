"""harness.config: schema errors, grids, variants, overrides, canonical hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import (
    ConfigError, config_hash, load_task_config, parse_overrides, parse_variant, path_safe, variant_name,
)

TOY = Path(__file__).parent / "fixtures" / "toyplugin" / "task.yaml"


def _write(tmp_path, mutate):
    raw = yaml.safe_load(TOY.read_text())
    mutate(raw)
    p = tmp_path / "task.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_grid_expands_to_canonical_variants_in_order():
    cfg = load_task_config(TOY)
    assert [v.variant for v in cfg.variants("tiny")] == [
        "sgd[lr=0.1]", "sgd[lr=0.5]", "sgd_best", "pair", "explode", "crash"]
    v = cfg.variants("tiny", only="sgd")[1]
    assert v.hyperparameters == {"lr": 0.5, "epochs": 3} and v.grid_point == {"lr": 0.5}


def test_resolve_grid_point_and_overrides():
    cfg = load_task_config(TOY)
    assert cfg.resolve("tiny", "sgd[lr=0.5]").variant == "sgd[lr=0.5]"
    m = cfg.resolve("tiny", "sgd[epochs=7,lr=0.5]")
    assert m.variant == "sgd[epochs=7,lr=0.5]" and m.hyperparameters == {"lr": 0.5, "epochs": 7}
    m2 = cfg.resolve("tiny", "sgd[lr=0.5]", overrides={"epochs": 7})
    assert m2.variant == m.variant and m2.hyperparameters == m.hyperparameters


def test_benchmark_defaults_sit_between_scale_defaults_and_method_values(tmp_path):
    def mutate(raw):
        tiny = raw["scales"]["tiny"]
        tiny["benchmarks"]["toy-a"]["defaults"] = {"epochs": 9, "lr": 0.9, "extra": 1}
        tiny["benchmarks"]["toy-b"] = {"dataset": "toy_blobs"}
        tiny["methods"]["pair"] = {"lr": 0.2}

    cfg = load_task_config(_write(tmp_path, mutate))
    a, b = cfg.benchmark("tiny", "toy-a"), cfg.benchmark("tiny", "toy-b")
    grid = cfg.resolve("tiny", "sgd[lr=0.5]")
    # The grid point keeps its lr; the benchmark's epochs replace the scale's 3.
    assert cfg.for_benchmark("tiny", grid, a).hyperparameters == {"lr": 0.5, "epochs": 9, "extra": 1}
    assert cfg.for_benchmark("tiny", cfg.resolve("tiny", "pair"), a).hyperparameters["lr"] == 0.2  # method value wins
    assert cfg.for_benchmark("tiny", grid, b) is grid  # a benchmark without defaults changes nothing
    over = cfg.resolve("tiny", "sgd[lr=0.5]", overrides={"epochs": 2})
    assert cfg.for_benchmark("tiny", over, a).hyperparameters["epochs"] == 2  # --set wins
    with pytest.raises(ConfigError, match="'defaults' must map"):
        load_task_config(_write(tmp_path, lambda r: r["scales"]["tiny"]["benchmarks"]["toy-a"].update(defaults=[1])))


def test_variant_names_are_canonical_and_path_safe():
    assert variant_name("m", {"b": 2, "a": 0.5}) == "m[a=0.5,b=2]"
    assert parse_variant("m[b=2, a=0.5]") == ("m", {"a": 0.5, "b": 2})
    assert path_safe("m[b=2,a=0.5]") == "m__a=0.5__b=2"
    assert variant_name("m", {"x": 2.0}) != variant_name("m", {"x": 2})
    with pytest.raises(ConfigError, match="key=value"):
        parse_variant("m[a]")
    assert parse_overrides(["lr=0.01", "name=adam", "flag=true"]) == {"lr": 0.01, "name": "adam", "flag": True}


def test_canonical_hash_ignores_key_order_and_rejects_nan():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 1.5})
    with pytest.raises(ValueError):
        config_hash({"a": float("nan")})


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r["scales"]["tiny"]["methods"].update({"ghost": {}}), "scales.tiny.methods names 'ghost'"),
    (lambda r: r["scales"]["tiny"]["benchmarks"]["toy-a"].pop("dataset"), "needs a 'dataset' key"),
    (lambda r: r["claims"][0].update({"function": "f"}), "either metric+treatment+control"),
    (lambda r: r.pop("paper"), "paper"),
    (lambda r: r.update({"name": "Bad-Name"}), "snake_case"),
    (lambda r: r["scales"]["tiny"].update({"seeds": [1, 1]}), "distinct"),
    (lambda r: r["claims"][0].update({"treatment": "nosuch"}), "treatment 'nosuch' is not a method"),
    (lambda r: r.update({"colour": "red"}), "colour"),
])
def test_bad_task_yaml_gives_one_clear_error(tmp_path, mutate, needle):
    p = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as e:
        load_task_config(p)
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "Fix" in msg


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="needs a task.yaml"):
        load_task_config(tmp_path / "nope.yaml")
    (tmp_path / "t.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_task_config(tmp_path / "t.yaml")


def test_unknown_scale_is_named():
    cfg = load_task_config(TOY)
    with pytest.raises(ConfigError, match="defines no 'paper' scale"):
        cfg.variants("paper")
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        cfg.benchmarks("huge")
