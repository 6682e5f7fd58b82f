"""Reports meant for people: self-contained HTML pages of tables and figures."""

from seqlm.reporting.html_report import QuickstartReport, html_table, write_html_report

__all__ = ["QuickstartReport", "html_table", "write_html_report"]
