"""Which errors read as a failed write into the run folder, and the one line each becomes."""
import errno

import pytest

from feedback_rl.errors import RunFailed
from feedback_rl.run.writes import failure, save_file, save_folder, writing


def test_a_full_disk_names_the_file_the_error_carries_and_what_it_holds(tmp_path):
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    assert str(failure(e, tmp_path, "the step's metrics")) == \
        f"cannot write {tmp_path / 'metrics.jsonl'} (the step's metrics): No space left on device"


def test_torch_words_inside_a_write_name_the_file_written(tmp_path):
    with pytest.raises(RunFailed) as failed:
        with writing(tmp_path / "trainer_state.pt", "checkpoint c"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert str(failed.value).startswith(f"cannot write {tmp_path / 'trainer_state.pt'} (checkpoint c): ")


def test_other_errors_pass_through_a_write_untouched(tmp_path):
    with pytest.raises(TypeError, match="not picklable"):
        with writing(tmp_path / "x.pt", "checkpoint c"):
            raise TypeError("not picklable")


def test_outside_a_known_write_only_a_full_disk_reads_as_one_not_an_io_error_of_a_read(tmp_path):
    assert failure(RuntimeError("Error while deserializing header: I/O error: bad file"), tmp_path) is None
    assert failure(OSError(errno.EIO, "Input/output error", "data.jsonl"), tmp_path) is None
    full = failure(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), tmp_path)
    assert str(full).startswith(f"cannot write {tmp_path}: ")


SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def test_a_folder_that_cannot_be_finished_is_removed_and_the_weights_file_it_was_writing_is_named(tmp_path):
    """safetensors names no file: in a folder being filled, the one it was writing is the newest weights file."""
    out = tmp_path / "stages" / "sft"

    def write(tmp):
        (tmp / "config.json").write_text("{}")
        (tmp / "model-00001-of-00002.safetensors").write_bytes(b"whole")
        (tmp / "model-00002-of-00002.safetensors").write_bytes(b"ha")  # half: the disk filled
        raise RuntimeError(SAFETENSORS_FULL)

    with pytest.raises(RunFailed) as failed:
        save_folder(out, "the output of stage 'sft'", write)
    tmp = tmp_path / "stages" / ".tmp-sft"
    assert str(failed.value) == (f"cannot write {tmp / 'model-00002-of-00002.safetensors'} (the output of stage "
                                 f"'sft'): {SAFETENSORS_FULL}; the unfinished folder was removed")
    assert list((tmp_path / "stages").iterdir()) == []


def test_a_folder_replaces_the_old_one_only_once_complete(tmp_path):
    out = tmp_path / "final"
    save_folder(out, "the final model", lambda tmp: (tmp / "a").write_text("old"))
    with pytest.raises(RunFailed):
        save_folder(out, "the final model", lambda tmp: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    assert [p.name for p in tmp_path.iterdir()] == ["final"] and (out / "a").read_text() == "old"
    save_folder(out, "the final model", lambda tmp: (tmp / "b").write_text("new"))
    assert [p.name for p in out.iterdir()] == ["b"]


def test_a_file_that_cannot_be_finished_is_named_as_the_user_knows_it_and_its_temporary_is_removed(tmp_path):
    path = tmp_path / "bad_batches" / "sft-step2-mb0.pt"

    def write(tmp):
        tmp.write_bytes(b"\0" * 534)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    with pytest.raises(RunFailed) as failed:
        save_file(path, "the non-finite batch of stage 'sft' step 2, kept for inspection", write)
    assert str(failed.value) == (f"cannot write {path} (the non-finite batch of stage 'sft' step 2, kept for "
                                 "inspection): [enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert list(path.parent.iterdir()) == []


def test_a_second_ctrl_c_while_a_folder_is_written_says_what_was_abandoned(tmp_path):
    def write(tmp):
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="^the final model was abandoned unfinished and removed$"):
        save_folder(tmp_path / "final", "the final model", write)
    assert list(tmp_path.iterdir()) == []


def test_a_copy_that_fills_the_disk_names_the_file_it_was_writing_not_the_one_it_read(tmp_path):
    e = OSError(errno.ENOSPC, "No space left on device")
    # as shutil sets them
    e.filename, e.filename2 = "final/model.safetensors", str(tmp_path / "out" / "model.safetensors")
    assert str(failure(e, tmp_path / "out", "the export")).startswith(f"cannot write {e.filename2} (the export): ")
