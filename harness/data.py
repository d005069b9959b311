"""Dataset builders: a registry by name, materialised to ``data/<name>/`` with a content hash.

Tasks contribute builders through ``Task.datasets()`` (name -> zero-argument function
returning a ``datasets.DatasetDict``). Two tasks may share a builder (one builder, two
tasks) by returning the same function object; two different builders under one name
is an error.

``harness data build NAME`` (what each DVC stage runs) calls the builder and writes::

    data/NAME/<split>/...      Arrow files via DatasetDict.save_to_disk
    data/NAME/manifest.json    {name, content_hash, splits: {split: {rows, columns}}, files}

The content hash is a sha256 over the Arrow files' bytes (sorted by relative path),
never over the JSON metadata: ``save_to_disk`` writes a fingerprint into state.json
that we also pin to the content hash, so a rebuild gives byte-identical output and
DVC's lock does not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from harness.config import ConfigError

MANIFEST = "manifest.json"


def data_root() -> Path:
    """Where datasets live: ``$HARNESS_DATA_DIR`` or ``./data``."""
    return Path(os.environ.get("HARNESS_DATA_DIR", "data"))


def dataset_folder(name: str, root: Path | None = None) -> Path:
    """``root/name``, after checking that ``name`` is one plain path component."""
    from harness.config import DATASET_RE

    if not isinstance(name, str) or not DATASET_RE.match(name):
        raise ConfigError(f"dataset name {name!r} must be path-safe (letters, digits, _ . -, starting with a "
                          "letter or digit)")
    return Path(root or data_root()) / name


def builders() -> dict[str, tuple[Callable[[], Any], list[str]]]:
    """Every dataset builder of every loadable task: name -> (builder, [task names])."""
    from harness.plugins import discover

    tasks, _ = discover()
    out: dict[str, tuple[Callable[[], Any], list[str]]] = {}
    for tname, task in sorted(tasks.items()):
        for dname, fn in task.datasets().items():
            dataset_folder(dname)  # a builder's name becomes data/<name>/: it must be path-safe
            if dname in out and out[dname][0] is not fn:
                raise ConfigError(
                    f"dataset {dname!r} has two different builders (tasks {out[dname][1][0]!r} and {tname!r}): "
                    "share one function or rename one dataset"
                )
            out.setdefault(dname, (fn, []))[1].append(tname)
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(folder: Path) -> str:
    """sha256 over (relative path, file hash) of every Arrow file under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*.arrow")):
        h.update(str(p.relative_to(folder)).encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()[:16]


def _pin_fingerprints(folder: Path, fingerprint: str) -> None:
    for state in Path(folder).rglob("state.json"):
        meta = json.loads(state.read_text())
        meta["_fingerprint"] = fingerprint
        state.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def build(name: str, root: Path | None = None, force: bool = False) -> Path:
    """Materialise dataset ``name`` under ``root/name`` and return its folder."""
    import datasets

    table = builders()
    if name not in table:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(sorted(table)) or 'none'}); see `harness tasks`")
    root = Path(root or data_root())
    target = dataset_folder(name, root)
    if (target / MANIFEST).exists() and not force:
        return target
    fn, _ = table[name]
    dd = fn()
    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    if not isinstance(dd, datasets.DatasetDict):
        raise TypeError(f"builder of {name!r} returned {type(dd).__name__}, expected datasets.DatasetDict")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
    try:
        dd.save_to_disk(str(tmp), max_shard_size="2GB")
        chash = content_hash(tmp)
        _pin_fingerprints(tmp, chash)
        manifest = {
            "name": name,
            "content_hash": chash,
            "splits": {s: {"rows": d.num_rows, "columns": list(d.column_names)} for s, d in dd.items()},
            "files": {str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*.arrow"))},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _missing(name: str, folder: Path) -> ConfigError:
    return ConfigError(
        f"dataset {name!r} is not built ({folder}/{MANIFEST} missing): run `harness data build {name}` "
        f"(or `dvc repro build@{name}`; snakemake does this for you)"
    )


def manifest(name: str, root: Path | None = None) -> dict[str, Any]:
    folder = dataset_folder(name, root)
    path = folder / MANIFEST
    if not path.exists():
        raise _missing(name, folder)
    try:
        m = json.loads(path.read_text())
        if not isinstance(m, dict) or not isinstance(m.get("content_hash"), str):
            raise ValueError("no content_hash")
    except (ValueError, UnicodeDecodeError) as e:
        raise DataMismatch(f"{path} is not a dataset manifest ({e}). {_restore_hint(name)}") from None
    return m


def data_hash(name: str, root: Path | None = None) -> str:
    return manifest(name, root)["content_hash"]


class DataMismatch(ConfigError):
    """A dataset's files on disk are not the ones its manifest (and so a run's record) names."""


def _restore_hint(name: str) -> str:
    return (f"Restore the DVC-tracked copy with `dvc checkout data/{name}`, or rebuild it with "
            f"`harness data build {name} --force`.")


#: (dataset folder, content hash) pairs whose files this process has hashed and found intact.
_VERIFIED: set[tuple[str, str]] = set()


def verified_hash(name: str, root: Path | None = None) -> str:
    """The content hash of ``name``, after checking that the Arrow files on disk hash to it.

    Every file is hashed once per process (a run process verifies the data it records); a
    mismatch, a missing or an extra file raises :class:`DataMismatch` naming the fix.
    """
    folder = dataset_folder(name, root)
    m = manifest(name, root)
    key = (str(folder.resolve()), m["content_hash"])
    if key in _VERIFIED:
        return m["content_hash"]
    on_disk = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.arrow"))}
    hashes = {rel: file_sha256(p) for rel, p in on_disk.items()}
    h = hashlib.sha256()
    for rel in sorted(hashes):  # the same sum as content_hash(), from the hashes just taken
        h.update(rel.encode())
        h.update(hashes[rel].encode())
    problems = []
    listed = m.get("files")
    if isinstance(listed, dict):
        problems += [f"{f} changed" for f in sorted(listed) if f in hashes and hashes[f] != listed[f]]
        problems += [f"{f} missing" for f in sorted(set(listed) - set(hashes))]
        problems += [f"{f} not in the manifest" for f in sorted(set(hashes) - set(listed))]
    if h.hexdigest()[:16] != m["content_hash"] and not problems:
        problems.append("the files do not hash to the manifest's content_hash")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise DataMismatch(
            f"dataset {name!r} at {folder} is not the data its manifest records (content_hash "
            f"{m['content_hash']}): {shown}. A run never uses data that differ from the hash it records. "
            + _restore_hint(name)
        )
    _VERIFIED.add(key)
    return m["content_hash"]


def load_dataset(name: str, root: Path | None = None):
    """The materialised ``datasets.DatasetDict`` of ``name`` (memory-mapped Arrow), verified
    against its manifest (once per process, see :func:`verified_hash`)."""
    folder = dataset_folder(name, root)
    if not (folder / MANIFEST).exists():
        raise _missing(name, folder)
    return _load_cached(str(folder.resolve()), verified_hash(name, root))


@lru_cache(maxsize=8)
def _load_cached(folder: str, chash: str):
    import datasets

    return datasets.load_from_disk(folder)


def verify(name: str, root: Path | None = None) -> bool:
    """True when the files on disk still hash to the manifest's content hash."""
    folder = dataset_folder(name, root)
    return content_hash(folder) == manifest(name, root)["content_hash"]


class DatasetUnavailable(ConfigError):
    """A paper-scale dataset cannot be obtained: offline and no local copy given."""


def load_source(name: str, env_var: str, hub_id: str, layout: str):
    """A paper-scale builder's raw ``datasets.DatasetDict``, from ``$env_var`` or else the hub id.

    ``$env_var`` may name a ``save_to_disk`` folder, a folder of ``<split>*.parquet`` files (splits
    train/validation/test), any folder ``datasets.load_dataset`` reads, or another hub id. Whatever
    fails (offline, missing path, wrong layout) becomes one :class:`DatasetUnavailable` that says
    how to fix it; ``layout`` describes the columns and splits the builder expects.
    """
    import datasets

    source = os.environ.get(env_var) or hub_id
    hint = (f"Paper scale needs {name}: run with network access to the Hugging Face hub ({hub_id}), "
            f"or set {env_var} to a local copy in the HF format ({layout}; a save_to_disk folder "
            "or a folder of parquet files).")
    path = Path(source).expanduser()
    try:
        if (path / "dataset_dict.json").exists():
            return datasets.load_from_disk(str(path))
        if source != hub_id and not path.exists():
            raise FileNotFoundError(f"{env_var}={source!r} does not exist")
        if path.is_dir():
            files = {s: sorted(str(p) for p in path.glob(f"{s}*.parquet")) for s in ("train", "validation", "test")}
            if any(files.values()):
                return datasets.load_dataset("parquet", data_files={k: v for k, v in files.items() if v})
            return datasets.load_dataset(str(path))
        return datasets.load_dataset(source)
    except Exception as e:  # noqa: BLE001 - offline, missing or malformed: one clear message
        raise DatasetUnavailable(f"could not load {name} from {source!r} ({type(e).__name__}: {e}). {hint}") from None
