"""`laueflow demo` checks every argument before it creates anything (no full demo here: minutes)."""
from __future__ import annotations

import pytest

from laueflow.cli.main import main

BAD = [
    (["--material", "Xx"], "unknown material"),
    (["--shape", "0x3"], "--shape"),
    (["--shape", "3by3"], "--shape"),
    (["--grains", "0"], "--grains"),
    (["--seed", "-1"], "--seed"),
    (["--workers", "two"], "--workers"),
    (["--workers", "0"], "--workers"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_creates_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # an empty folder of the user's stays empty (and does not block the next demo)
    out.mkdir()
    assert main(["demo", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_out_is_a_file(tmp_path, capsys):
    out = tmp_path / "demo"
    out.write_text("mine")
    assert main(["demo", "--out", str(out)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "mine"
