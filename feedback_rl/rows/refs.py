"""The data references a recipe's ``data.train`` / ``data.eval`` accept: a file path, ``{path: ...}``,
``{dataset: ...}``, ``{generator: ...}`` or a data-source plugin's ``{<kind>: ...}``. docs/data.md shows each; feedback_rl/rows/dataset.py reads them.
They live with the rows they point at, below config/ (whose recipe schema holds them), so rows/ never imports config/."""
from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, model_validator


class GeneratedData(BaseModel):
    """A synthetic dataset the project generates (``feedback_rl.rows.synthetic``)."""

    model_config = ConfigDict(extra="forbid")

    generator: str = Field(description="a generator from feedback_rl/rows/synthetic.py, e.g. addition")
    split: Literal["train", "eval"] = "train"
    size: int | None = Field(None, ge=1, description="keep only this many rows")
    holdout: int = Field(500, ge=1, description="rows reserved for the eval split (never in train)")
    seed: int = 0


class RowSelection(BaseModel):
    """What a file or a `datasets` source keeps of its rows: renames, then shuffle, holdout and size."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str] = Field({}, description="rename columns, target: source (prompt: question)")
    shuffle: bool = Field(True, description="shuffle the rows with `seed` before holdout and size pick them")
    seed: int = Field(0, description="the shuffle's seed")
    holdout: int = Field(0, ge=0, description="rows set aside for evaluation (never in part: train)")
    part: Literal["train", "eval"] = Field("train", description="train: the rows after the holdout; "
                                           "eval: the held-out rows")
    size: int | None = Field(None, ge=1, description="keep only this many rows of the part")

    @model_validator(mode="after")
    def _eval_needs_holdout(self) -> "RowSelection":
        if self.part == "eval" and self.holdout == 0:
            raise ValueError("part: eval takes the held-out rows; set holdout to how many")
        return self


class FileData(RowSelection):
    """A local data file: .jsonl, .json (lines or one array), .csv or .parquet."""

    path: str = Field(description="the file, relative to the recipe's folder")


class HubData(RowSelection):
    """Rows through the `datasets` library: a hub id, a `save_to_disk` folder, or a folder of data files."""

    dataset: str = Field(description="a hub id, a local folder, or a builder (json, csv, parquet) with data_files")
    split: str = Field("train", description="the dataset's own split to read")
    name: str | None = Field(None, description="the subset (configuration) name")
    revision: str | None = Field(None, description="a branch, tag or commit of the hub repository")
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="files (or globs) to read, as load_dataset takes them")


class SourcedData(BaseModel):
    """Rows from a data-source plugin, named by its key: ``{reasoning_gym: leg_counting, size: 500, seed: 1}``.

    The other keys are that plugin's options, validated by it when the recipe loads.
    """

    model_config = ConfigDict(extra="allow")
    # set by validation when the stage's train is a data source too: eval rows whose prompt is in it are dropped
    _train: SourcedData | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _a_source_mapping(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise ValueError("expected a file path or a mapping naming its kind")
        if theirs := sorted(set(v) & set(DATA_KINDS)):
            raise ValueError(f"a mapping with '{theirs[0]}' is not a data source's")  # the core forms report
        return v

    @property
    def entries(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# The key that tells a core data mapping's kind. The union is discriminated by it, so an error speaks of the
# branch the user meant (not one error per branch). A mapping with none of these keys is a data-source
# plugin's kind (SourcedData), which the recipe check looks up in the registry.
DATA_KINDS = {"generator": "GeneratedData", "path": "FileData", "dataset": "HubData"}


def _data_kind(value: Any) -> str | None:
    """The union branch (its tag) a value is meant for."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, BaseModel):
        return type(value).__name__
    if not isinstance(value, dict):
        return None
    for key, kind in DATA_KINDS.items():
        if key in value:
            return kind
    # a misspelt kind key ('pth'): the nearest kind, so its error names the unknown key
    for key in value:
        close = difflib.get_close_matches(str(key), DATA_KINDS, n=1, cutoff=0.6)
        if close:
            return DATA_KINDS[close[0]]
    return "SourcedData" if value else None   # a data-source plugin's kind (checked against the registry)


DataRef = Annotated[
    Annotated[str, Tag("str")] | Annotated[GeneratedData, Tag("GeneratedData")]
    | Annotated[FileData, Tag("FileData")] | Annotated[HubData, Tag("HubData")]
    | Annotated[SourcedData, Tag("SourcedData")],
    Discriminator(_data_kind, custom_error_type="data_kind", custom_error_message=(
        "expected a data file path, or a mapping with one of the keys " + ", ".join(DATA_KINDS)))]
