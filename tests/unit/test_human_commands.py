"""`frl label ...`: annotators, terminal labeling, export to the offline formats and import back."""
from __future__ import annotations

import json

from feedback_rl.commands.cli import main
from frl_plugins.rewards.human.commands import export_rows, import_row
from frl_plugins.rewards.human.store import LabelStore
from frl_plugins.rewards.human.terminal import label_loop


def test_add_annotator_prints_a_working_token(tmp_path, capsys):
    db = tmp_path / "l.sqlite"
    assert main(["label", "add-annotator", "ann", "--db", str(db), "--create"]) == 0
    token = capsys.readouterr().out.strip()
    assert LabelStore(db).annotator_for(token) == "ann"


def test_terminal_labels_with_keys_skips_and_quits(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    ids = store.enqueue_many([("pairwise", "1+1=", "2", "3", {}), ("thumbs", "2+2=", "4", None, {}),
                              ("rating", "3+3=", "6", None, {}), ("thumbs", "4+4=", "9", None, {})])
    keys = iter(["x", "2", "d", "5", "s"])  # x: unknown key, asked again
    shown: list[str] = []
    n = label_loop(store, "me", read=lambda _: next(keys), echo=shown.append)
    assert n == 3
    assert {(x.item_id, x.choice) for x in store.all_labels()} == {(ids[0], "b"), (ids[1], "down"), (ids[2], "5")}
    assert any("unknown key" in s for s in shown)
    assert store.next_item("me") is None  # the last one was skipped


def test_terminal_shows_model_text_as_a_quoted_literal(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    store.enqueue("thumbs", "p", "\x1b[2Jgotcha")
    shown: list[str] = []
    label_loop(store, "me", read=lambda _: "q", echo=shown.append)
    assert not any("\x1b" in s for s in shown) and any("\\x1b[2Jgotcha" in s for s in shown)


def test_export_writes_offline_formats_and_import_is_idempotent(tmp_path, capsys):
    src = LabelStore(tmp_path / "src.sqlite")
    p = src.enqueue("pairwise", "1+1=", "3", "2")
    t = src.enqueue("thumbs", "2+2=", "4")
    r = src.enqueue("rating", "3+3=", "7")
    tie = src.enqueue("pairwise", "4+4=", "1", "2")
    for item, choice in ((p, "b"), (t, "up"), (r, "2"), (tie, "tie")):
        src.submit(item, "ann", choice)
    out = tmp_path / "labels.jsonl"
    assert main(["label", "export", "--db", str(tmp_path / "src.sqlite"), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows == [
        {"prompt": "1+1=", "annotator": "ann", "task": "pairwise", "chosen": "2", "rejected": "3"},
        {"prompt": "2+2=", "annotator": "ann", "task": "thumbs", "completion": "4", "label": True},
        {"prompt": "3+3=", "annotator": "ann", "task": "rating", "completion": "7", "label": False, "rating": 2},
    ]
    dst = tmp_path / "dst.sqlite"
    for _ in range(2):
        assert main(["label", "import", "--db", str(dst), "--create", str(out)]) == 0
    assert export_rows(LabelStore(dst)) == rows


def test_import_reports_the_bad_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p"}\n')
    assert main(["label", "import", "--db", str(tmp_path / "d.sqlite"), "--create", str(bad)]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err


def test_import_row_rejects_a_non_boolean_label(tmp_path):
    store = LabelStore(tmp_path / "d.sqlite")
    try:
        import_row(store, {"prompt": "p", "completion": "c", "label": "yes"}, "x")
    except ValueError as e:
        assert "true or false" in str(e)
    else:
        raise AssertionError("accepted label 'yes'")


def test_every_label_command_refuses_a_missing_db_unless_create(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text("")
    typo = tmp_path / "lables.sqlite"
    for args in (["add-annotator", "me"], ["cli"], ["export", "--out", str(tmp_path / "o.jsonl")],
                 ["import", str(tmp_path / "in.jsonl")]):
        assert main(["label", *args, "--db", str(typo)]) == 2
        err = capsys.readouterr().err
        assert f"--db {typo}: no such label database" in err and "--create" in err and len(err.splitlines()) == 1
        assert not typo.exists()
    assert main(["label", "export", "--db", str(typo), "--create", "--out", str(tmp_path / "o.jsonl")]) == 0
    assert typo.exists()


def test_an_export_imported_into_its_own_database_stores_no_preference_twice(tmp_path, capsys):
    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    # as a run enqueues them: the chosen completion may be B; two items may show the same texts
    first = store.enqueue("pairwise", "1+1=", "2", "3")
    swapped = store.enqueue("pairwise", "1+1=", "3", "2")
    thumbs = store.enqueue("thumbs", "2+2=", "4")
    store.submit(swapped, "ann", "b")
    store.submit(first, "bob", "a")
    store.submit(thumbs, "ann", "up")
    out = tmp_path / "labels.jsonl"
    assert main(["label", "export", "--db", str(db), "--out", str(out)]) == 0
    before = store.all_labels()
    capsys.readouterr()
    assert main(["label", "import", "--db", str(db), str(out)]) == 0
    assert capsys.readouterr().out.strip() == "0 labels imported"
    after = store.all_labels()
    assert [(x.item_id, x.annotator, x.choice) for x in after] == [(x.item_id, x.annotator, x.choice) for x in before]
    assert store._conn().execute("SELECT COUNT(*) FROM items").fetchone()[0] == 3
    assert store.history() == []


def test_an_import_that_reverses_a_preference_changes_the_label_it_had(tmp_path, capsys):
    store = LabelStore(tmp_path / "labels.sqlite")
    item = store.enqueue("pairwise", "1+1=", "3", "2")
    store.submit(item, "ann", "b")  # "2" chosen
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": "1+1=", "annotator": "ann", "chosen": "3", "rejected": "2"}) + "\n")
    assert main(["label", "import", "--db", str(store.path), str(rows)]) == 0
    assert [(x.item_id, x.choice) for x in store.all_labels()] == [(item, "a")]
    assert store.history()[-1]["old_choice"] == "b"


def test_a_non_utf8_import_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "caf\xe9", "chosen": "a", '
                    b'"rejected": "b"}\n')
    assert main(["label", "import", "--db", str(tmp_path / "d.sqlite"), "--create", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}:2: not UTF-8: byte 0xe9 at column 16; labels are read as UTF-8 JSONL " \
                  "(the export's format)\n"


def test_add_annotator_refuses_an_existing_name_unless_asked_to_rotate(tmp_path, capsys):
    db = tmp_path / "l.sqlite"
    assert main(["label", "add-annotator", "ann", "--db", str(db), "--create"]) == 0
    old = capsys.readouterr().out.strip()
    assert main(["label", "add-annotator", "ann", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err == "error: add-annotator ann: annotator 'ann' already exists; --rotate gives them a new token " \
                  "(their current one then stops working)\n"
    assert LabelStore(db).annotator_for(old) == "ann"  # whoever labels with it is not locked out
    assert main(["label", "add-annotator", "ann", "--db", str(db), "--rotate"]) == 0
    cap = capsys.readouterr()
    new = cap.out.strip()
    assert "the old one no longer works" in cap.err
    assert LabelStore(db).annotator_for(new) == "ann" and LabelStore(db).annotator_for(old) is None
    assert main(["label", "add-annotator", "nobody", "--db", str(db), "--rotate"]) == 2
    assert "no annotator 'nobody' to rotate" in capsys.readouterr().err
