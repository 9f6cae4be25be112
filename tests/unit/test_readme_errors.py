"""The bad-input matrix the integration tests drive is the README's error table."""

import re
from pathlib import Path

from tests.integration.test_bad_input import CASES

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_error_rows() -> dict[str, set[int]]:
    rows: dict[str, set[int]] = {}
    for line in README.read_text().splitlines():
        match = re.match(r"^\|.*\|\s*(\d{3})\s*\|\s*`(\w+)`", line)
        if match:
            rows.setdefault(match.group(2), set()).add(int(match.group(1)))
    return rows


def test_every_tested_error_is_documented_with_its_status():
    rows = readme_error_rows()
    for name, _body, status, code in CASES:
        assert status in rows.get(code, set()), f"README error table lacks {code} ({status}) for {name!r}"
