"""The recorder's writer thread: RECORD steps written in order, all of them
before the results close, and a refused row stops the recorder."""

from __future__ import annotations

import pytest

from dsosim.federates.recorder.__main__ import Writer


def test_steps_are_written_in_order_and_close_waits_for_them() -> None:
    done: list[int] = []
    writer = Writer(lambda k: done.append(k))
    for k in range(50):
        writer.put(k)
    writer.close()
    assert done == list(range(50))
    writer.close()  # closing twice is harmless


def test_a_failed_step_is_raised_and_the_later_ones_are_not_written() -> None:
    done: list[int] = []

    def write(k: int) -> None:
        if k == 3:
            raise ValueError("rows refused at 3")
        done.append(k)

    writer = Writer(write)
    for k in range(6):
        writer.put(k)
    with pytest.raises(ValueError, match="rows refused at 3"):
        writer.close()
    assert done == [0, 1, 2]
    with pytest.raises(ValueError, match="rows refused at 3"):
        writer.check()
