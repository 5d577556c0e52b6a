"""Regenerate docs/configuration.md from the config models (tests/report/test_docs.py checks it is up to date).

    .venv/bin/python scripts/gen_config_docs.py
"""

from __future__ import annotations

from pathlib import Path

from quadselect.configdoc import write_config_reference

if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    write_config_reference(target)
    print(f"wrote {target}")
