"""Which errors read as a failed write into the run folder, and the one line each becomes."""
import errno

import pytest

from feedback_rl.errors import RunFailed
from feedback_rl.run.writes import failure, writing


def test_a_full_disk_names_the_file_the_error_carries_and_what_it_holds(tmp_path):
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    assert str(failure(e, tmp_path)) == f"cannot write {tmp_path / 'metrics.jsonl'} (the step's metrics): " \
                                        "No space left on device"


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
