"""The real-world test data ships with its provenance: every folder says where it comes from and its licence."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TESTDATA

FOLDERS = sorted(p for p in TESTDATA.iterdir() if p.is_dir())


def test_the_data_is_in_the_repository() -> None:
    assert [p.name for p in FOLDERS] == ["barcodes", "gps", "vrp"]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_every_folder_names_its_source_and_licence(folder: Path) -> None:
    text = (folder / "LICENSE-and-SOURCE.md").read_text(encoding="utf-8")
    assert "source repository" in text.lower()
    assert "licen" in text.lower()
