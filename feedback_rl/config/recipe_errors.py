"""Recipe error messages: one line with the file, the line, the key's path and what was expected."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from feedback_rl.errors import UserError, did_you_mean

# Run and stage names become folder names (runs/<run>/stages/<stage>): one plain path part, never "..", "/" or "".
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _line_map(node: Any, loc: tuple = ()) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    if node is None:
        return out
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[loc + (k.value,)] = k.start_mark.line + 1
            sub = _line_map(v, loc + (k.value,))
            sub.pop(loc + (k.value,), None)
            out.update(sub)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_line_map(v, loc + (i,)))
    return out


def _duplicate_keys(node: Any, path: Path, loc: tuple = ()) -> None:
    """Refuse a key given twice in one mapping: YAML keeps the last silently (a second ``train:`` in a stage
    replaced the first, and its lr with it)."""
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key is not None and key != "<<":
                line = k.start_mark.line + 1
                if key in first:
                    raise UserError(f"{path}:{line}: {_dotted(loc + (key,))}: duplicate key (first at line "
                                    f"{first[key]}); YAML would keep only the last: merge them into one")
                first[key] = line
            _duplicate_keys(v, path, loc + ((key,) if key is not None else ()))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _duplicate_keys(v, path, loc + (i,))


def _where(path: Path, lines: dict, loc: tuple) -> str:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    line = lines.get(loc)
    if isinstance(line, str):
        return line  # a key --set gave: the --set names it (apply_override)
    return f"{path}:{line}" if line else str(path)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if not isinstance(part, int) and (not str(part).isprintable() or not str(part) or " " in str(part)):
            part = repr(str(part))  # a key with odd characters stays on one, readable line
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _kind(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "integer", float: "number",
            bool: "boolean", type(None): "nothing"}.get(type(v), type(v).__name__)


def _expected(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "missing":
        return "missing required key"
    if err["type"] == "too_short":
        return f"expected at least {err['ctx']['min_length']} item(s), got none"
    if err["type"] == "string_pattern_mismatch" and err["ctx"]["pattern"] == NAME_PATTERN:
        msg = "expected a folder name: letters, digits, '_', '.' and '-', starting with a letter or digit"
    elif msg.startswith("Input should be "):
        msg = "expected " + msg[len("Input should be "):]
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
        msg += f", got {err['input']!r}"
    return msg


def _clean_loc(loc: tuple, root: type[BaseModel]) -> tuple:
    """Drop the union-branch tags pydantic puts in a location ('str', 'GeneratedData', 'list[...]')."""
    tags = set(schema_classes(root)) | {"str", "int", "float", "bool", "list", "dict", "none"}
    out = tuple(p for p in loc if isinstance(p, int) or not (p in tags or "[" in p or p.startswith("function-")))
    return out or tuple(loc)


def schema_classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every schema class reachable from ``root`` through its fields' annotations, by name (pydantic names a
    union's branch by its class in an error's location)."""
    import typing
    seen: set[type] = set()
    todo: list[Any] = [root]
    while todo:
        ann = todo.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if ann not in seen:
                seen.add(ann)
                todo += [f.annotation for f in ann.model_fields.values()]
        else:
            todo += list(typing.get_args(ann))
    return {c.__name__: c for c in seen}


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The schema class at a location, to list its keys in a did-you-mean."""
    import typing
    classes = schema_classes(model)
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = classes.get(str(part))   # a union branch's tag names its class (data refs)
        if isinstance(tagged, type) and issubclass(tagged, BaseModel):
            cur = tagged
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in cur.model_fields:
            return None
        ann = cur.model_fields[part].annotation
        cur = _unwrap(ann, typing)
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _unwrap(ann: Any, typing: Any) -> Any:
    for arg in (typing.get_args(ann) or (ann,)):
        inner = typing.get_args(arg)
        for cand in (inner or (arg,)):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                return cand
    return ann


def _pydantic_message(e: ValidationError, path: Path, lines: dict, root: type[BaseModel]) -> str:
    errors = e.errors()
    # a union (path or generator mapping) reports one error per branch: prefer the mapping branch
    first = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = _clean_loc(tuple(first["loc"]), root)
    where = _where(path, lines, loc)
    if first["type"] == "extra_forbidden":
        parent = _model_at(root, tuple(first["loc"])[:-1]) or _model_at(root, loc[:-1])
        choices = list(parent.model_fields) if parent else []
        return f"{where}: {_dotted(loc)}: unknown key{did_you_mean(loc[-1], choices)}" + \
            (f"; expected one of: {', '.join(choices)}" if choices else "")
    return f"{where}: {_dotted(loc)}: {_expected(first)}"
