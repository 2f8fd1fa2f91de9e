"""docs/apis.md is generated from contracts/ and must match them."""

from pathlib import Path

from mockflock.apidocs import render

PAGE = Path(__file__).resolve().parent.parent / "docs" / "apis.md"


def test_api_reference_is_up_to_date() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), "regenerate with: python -m mockflock.apidocs > docs/apis.md"
