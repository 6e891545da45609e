"""data.tensorboard's reader on hand-made event files, in process (no framework, no child): the gaps a mutation
run found beside the format tests in test_extras.py. Run: pytest tests/test_data_tensorboard.py"""
from __future__ import annotations

import pytest

from data import tensorboard as tb

from conftest import no_hang


def test_a_damaged_record_length_is_refused_not_read_as_a_truncated_tail(tmp_path):
    """The length's own checksum guards it: a flipped length bit must not be taken for a short last record
    (which ends the file quietly) nor send the reader past the data."""
    record = bytearray(tb.frame(tb.encode_event(1.0, 3, {"a": 1.0})))
    record[0] ^= 0x01  # the length's low byte
    path = tmp_path / "events.out.tfevents.1.host.klc"
    path.write_bytes(tb.frame(tb.encode_event(1.0, 1, {"a": 0.5})) + bytes(record))
    with pytest.raises(ValueError, match=r"record at byte \d+: length checksum does not match"):
        tb.read_events(path)


def test_negative_steps_read_back_as_negative():
    with no_hang(5):  # a varint of a negative int without its 64-bit mask never ends
        data = tb.encode_event(2.0, -5, {"x": 0.5})
    assert tb.decode_event(data) == {
        "wall_time": 2.0, "step": -5, "file_version": None, "scalars": {"x": 0.5}}


def test_a_message_that_ends_inside_a_field_is_refused():
    data = tb.encode_event(2.0, 7, {"loss": 0.25})
    cut = tb._key(5, 2) + bytes([len(data)]) + data[:4]  # a summary that claims more bytes than follow
    with pytest.raises(ValueError, match="protobuf message ends inside a field"):
        tb.decode_event(cut)


def test_scalars_are_read_file_by_file_in_name_order(tmp_path):
    """TensorBoard reads a run's event files oldest name first: a restarted writer's points come after."""
    for name, step in (("events.out.tfevents.2.host.klc", 2), ("events.out.tfevents.1.host.klc", 1),
                       ("events.out.tfevents.3.host.klc", 3)):
        (tmp_path / name).write_bytes(tb.frame(tb.encode_event(1.0, step, {"train/loss": step / 4})))
    (tmp_path / "notes.txt").write_text("not an event file")
    assert [p.name for p in tb.event_files(tmp_path)] == [f"events.out.tfevents.{i}.host.klc" for i in (1, 2, 3)]
    assert tb.read_scalars(tmp_path) == {"train/loss": [(1, 0.25), (2, 0.5), (3, 0.75)]}


def test_summary_lists_each_run_folder_with_its_tags(tmp_path, capsys):
    for run, points in (("mnist/tf-mlp-s0", [(1, 0.5), (2, 0.25)]), ("mnist/torch-mlp-s0", [(1, 0.75)])):
        w = tb.EventWriter(tmp_path / run)
        for step, value in points:
            w.scalars({"train/loss": value, "test/accuracy": 1 - value}, step, wall_time=1.0)
        w.close()
    assert tb.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "mnist/tf-mlp-s0",
        f"  {'test/accuracy':24s}      2 points, last step 2: 0.75",
        f"  {'train/loss':24s}      2 points, last step 2: 0.25",
        "mnist/torch-mlp-s0",
        f"  {'test/accuracy':24s}      1 points, last step 1: 0.25",
        f"  {'train/loss':24s}      1 points, last step 1: 0.75"]


def test_summary_of_a_folder_without_event_files_says_so(tmp_path, capsys):
    assert tb.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"python -m data.tensorboard: no event files under {tmp_path}\n"
    assert tb.main([]) == 2


def test_a_value_of_zero_is_a_point_too():
    """An accuracy of 0 at the first evaluation is a point, not a missing value."""
    assert tb.decode_event(tb.encode_event(1.0, 1, {"test/accuracy": 0.0, "train/loss": -0.0}))["scalars"] == {
        "test/accuracy": 0.0, "train/loss": -0.0}
