"""Progress lines fit for a terminal, a pipe and a log file."""
from __future__ import annotations

import io

from bus.cli.common import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_into_a_pipe_progress_is_plain_lines_no_more_often_than_asked():
    # Given progress written to a pipe (not a terminal), at most one line a minute
    out = io.StringIO()
    line = Progress(every_s=60, stream=out)
    # When it is updated a thousand times
    for n in range(1000):
        line.show(f"{n} / 1000 readings stored")
    line.done()
    # Then the pipe holds one plain line, with no carriage return
    assert out.getvalue() == "  0 / 1000 readings stored\n"


def test_on_a_terminal_progress_is_rewritten_in_place_and_ends_with_a_newline():
    out = Terminal()
    line = Progress(stream=out)
    line.show("1 / 2")
    line.show("2 / 2")
    line.done()
    assert out.getvalue() == "\r  1 / 2   \r  2 / 2   \n"
