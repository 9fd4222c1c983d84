"""``instacli report``: the results of a comparison (``results.json``, :mod:`instacli.results`) or
of a single run, rendered as ``report.md`` and one self-contained ``report.html``, with the figures
also written to ``figures/`` for the Markdown file.

Contents: the results table (best values highlighted), failed combinations with their messages,
accuracy versus training time, learning curves of every model (from its ``metrics.jsonl``
history), confusion matrices, predicted-versus-actual likes on log axes, what each baseline is, and
the settings of every run.

* :mod:`instacli.report.table`: columns, formatting, best values, failures.
* :mod:`instacli.report.figures`: the figures.
* :mod:`instacli.report.render`: Markdown and HTML, :func:`render_report`, :func:`rerender`.
"""

from instacli.report.render import ReportFiles, render_report, rerender
from instacli.report.table import COLUMNS, ORACLE_NOTE, failures, table_rows

__all__ = ["COLUMNS", "ORACLE_NOTE", "ReportFiles", "failures", "render_report", "rerender", "table_rows"]
