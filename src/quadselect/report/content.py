"""What the page shows: computed by `build_report`, rendered by `render_page` (its own module, so neither of the two
needs the other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quadselect.config import ReportConfig
from quadselect.report.artifacts import RunArtifacts


@dataclass
class Content:
    """Everything the page shows, in page order; figures are PNG bytes."""

    artifacts: RunArtifacts
    options: ReportConfig
    figures: dict[str, bytes] = field(default_factory=dict)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    top_docs: list[dict[str, Any]] = field(default_factory=list)
    bottom_docs: list[dict[str, Any]] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
