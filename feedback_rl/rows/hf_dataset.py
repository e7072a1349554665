"""Rows through the `datasets` library: a hub id, a `save_to_disk` folder, a folder of data files, or a
builder (json, csv, parquet, ...) with ``data_files``. Offline, a hub id fails in one line, at once."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from feedback_rl.modeling import hub
from feedback_rl.errors import UserError, did_you_mean
from feedback_rl.rows.refs import HubData

BUILDERS = ("json", "csv", "parquet", "text", "arrow")


def open_dataset(ref: HubData, base_dir: Path) -> tuple[Any, str]:
    """The ``datasets.Dataset`` that ``ref`` names, and how messages name it."""
    import datasets
    # its errors become one UserError line here; its logger would print them a second time
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    datasets.disable_progress_bars()
    local = Path(ref.dataset).expanduser()
    local = local if local.is_absolute() else base_dir / local
    if ref.dataset not in BUILDERS and local.exists():
        origin = f"{local} ({ref.split})"
        if local.is_file():
            raise UserError(f"{local}: dataset: is a file, not a dataset folder; give it as {{path: {ref.dataset}}}")
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            saved = _call(origin, datasets.load_from_disk, str(local))
            return (_pick_split(saved, ref.split, origin) if isinstance(saved, datasets.DatasetDict) else saved), origin
        return _call(origin, datasets.load_dataset, str(local), ref.name, split=ref.split,
                     data_files=ref.data_files), origin
    if ref.dataset in BUILDERS:
        if ref.data_files is None:
            raise UserError(f"dataset '{ref.dataset}': set data_files to the files this builder reads")
        origin = f"dataset '{ref.dataset}' ({ref.data_files}, {ref.split})"
        return _call(origin, datasets.load_dataset, ref.dataset, ref.name, split=ref.split,
                     data_files=_under(ref.data_files, base_dir)), origin
    origin = f"dataset '{ref.dataset}' ({ref.split})"
    if not hub.HUB_ID.fullmatch(ref.dataset):
        raise UserError(f"dataset '{ref.dataset}': no such local folder, and not a hub id (namespace/name)")
    reason = hub.offline_reason("dataset")
    if reason is not None:
        hub.use_cache_only()   # a copy in the cache still loads; anything else fails at once, not after retries
    try:
        return datasets.load_dataset(ref.dataset, ref.name, split=ref.split, revision=ref.revision,
                                     data_files=ref.data_files), origin
    except ConnectionError as e:
        if reason is None:
            raise UserError(f"{origin}: {_first_line(e)}") from None
        raise UserError(f"dataset '{ref.dataset}': not in the local cache, and the hub cannot be reached "
                        f"({reason})") from None
    except (ValueError, OSError, datasets.exceptions.DatasetsError) as e:
        raise UserError(f"{origin}: {_first_line(e)}") from None


def _call(origin: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    import datasets
    try:
        return fn(*args, **kwargs)
    except (ValueError, OSError, datasets.exceptions.DatasetsError) as e:
        raise UserError(f"{origin}: {_first_line(e)}") from None


def _pick_split(saved: Any, split: str, origin: str) -> Any:
    if split not in saved:
        raise UserError(f"{origin}: no split '{split}'{did_you_mean(split, list(saved))}; "
                        f"the folder has: {', '.join(saved)}")
    return saved[split]


def _under(files: Any, base_dir: Path) -> Any:
    """data_files relative to the recipe's folder, as every other path in a recipe."""
    if isinstance(files, dict):
        return {k: _under(v, base_dir) for k, v in files.items()}
    if isinstance(files, list):
        return [_under(f, base_dir) for f in files]
    path = Path(files).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def _first_line(e: BaseException) -> str:
    # DatasetGenerationError says only "An error occurred while generating the dataset"; its cause says what
    cause = e.__cause__ if e.__cause__ is not None and type(e).__name__ == "DatasetGenerationError" else e
    text = str(cause).strip()
    return (text.splitlines()[0] if text else type(cause).__name__)
