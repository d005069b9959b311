"""harness.data: deterministic materialisation, content hash, clear errors."""

from __future__ import annotations

import pytest

from harness import data
from harness.config import ConfigError


def _bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rebuild_is_byte_identical_with_a_stable_hash(tmp_path):
    a = data.build("toy_blobs", root=tmp_path / "a")
    b = data.build("toy_blobs", root=tmp_path / "b")
    assert _bytes(a) == _bytes(b)  # state.json fingerprints are pinned: DVC's lock stays put
    m = data.manifest("toy_blobs", root=tmp_path / "a")
    assert m["content_hash"] == data.content_hash(a) == data.data_hash("toy_blobs", root=tmp_path / "b")
    assert m["splits"]["train"] == {"rows": 200, "columns": ["x", "label"]}
    dd = data.load_dataset("toy_blobs", root=tmp_path / "a")
    assert dd["test"].num_rows == 100


def test_verify_detects_changed_files(tmp_path):
    folder = data.build("toy_blobs", root=tmp_path)
    assert data.verify("toy_blobs", root=tmp_path)
    arrow = next(folder.rglob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:-8] + b"tampered")
    assert not data.verify("toy_blobs", root=tmp_path)


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="harness data build toy_blobs"):
        data.load_dataset("toy_blobs", root=tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        data.build("nope", root=tmp_path)


def test_load_source_reads_local_copies_and_names_the_fix_when_missing(tmp_path, monkeypatch):
    import datasets

    from harness.data import DatasetUnavailable, load_source

    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": [f"{s} a", f"{s} b"]})
                               for s in ("train", "validation", "test")})
    dd.save_to_disk(str(tmp_path / "disk"))
    for split, ds in dd.items():  # the same rows as a folder of parquet files
        (tmp_path / "pq").mkdir(exist_ok=True)
        ds.to_parquet(str(tmp_path / "pq" / f"{split}-00000.parquet"))
    for folder in ("disk", "pq"):
        monkeypatch.setenv("MY_SOURCE", str(tmp_path / folder))
        got = load_source("corpus", "MY_SOURCE", "org/corpus", "a text column")
        assert {s: got[s]["text"] for s in got} == {s: dd[s]["text"] for s in dd}
    monkeypatch.setenv("MY_SOURCE", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetUnavailable, match=r"does not exist.*set MY_SOURCE to a local copy.*a text column"):
        load_source("corpus", "MY_SOURCE", "org/corpus", "a text column")
