"""The report: one self-contained HTML page and PNG figures that show what a run selected and why."""

from quadselect.report.build import Report, build_report

__all__ = ["Report", "build_report"]
