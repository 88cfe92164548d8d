"""The meter → HES assignment table: read once, re-read when the file changes."""
from __future__ import annotations

import os
import time

import pytest

from bus.errors import ConfigError
from connectors.hes_request import Assignment


def test_a_changed_assignment_file_is_seen_within_the_recheck_interval(tmp_path):
    # Given a worker's assignment table read from its CSV file
    path = tmp_path / "assignment.csv"
    path.write_text("meter,hes\nM1,hes-a\n")
    assignment = Assignment()
    assignment.RECHECK_S = 0.2
    assert assignment.table(str(path)) == {"M1": "hes-a"}
    # When an operator moves the meter to another HES
    path.write_text("meter,hes\nM1,hes-b\nM2,hes-a\n")
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime even on a coarse-grained filesystem
    # Then the worker answers from the new table once the recheck interval has passed
    time.sleep(0.3)
    assert assignment.table(str(path)) == {"M1": "hes-b", "M2": "hes-a"}


def test_a_missing_assignment_file_is_a_configuration_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="meter assignment .*nowhere.csv"):
        Assignment().table(str(tmp_path / "nowhere.csv"))
