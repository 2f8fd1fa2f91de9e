"""The examples: the example client's suite passes, and every broken variant is caught by its rule.

The broken variants are wrong on purpose. The tests here pass when
mockflock reports each one with the expected rule id and a fix.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mockflock.control import Control

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES / "broken"))

from variants import VARIANTS, BrokenVariant  # noqa: E402

from mockflock.violations import RULES  # noqa: E402


def test_every_rule_has_a_broken_variant() -> None:
    assert sorted({variant.rule for variant in VARIANTS}) == sorted(RULES)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda variant: variant.rule)
def test_broken_variant_is_caught(mockflock: Control, variant: BrokenVariant) -> None:
    variant.scenario(mockflock)
    caught = [violation for violation in mockflock.violations() if violation.rule == variant.rule]
    assert caught, mockflock.report()
    assert variant.fix_mentions in caught[0].fix
    assert caught[0].requests
    assert f"[{variant.rule}]" in mockflock.report()


def test_example_suite_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_flock_client.py")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "15 passed" in result.stdout


def test_demo_reports_every_variant() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "broken" / "demo.py")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("BROKEN VARIANT:") == len(VARIANTS)
    assert f"All {len(VARIANTS)} broken variants were caught by their rules." in result.stdout
