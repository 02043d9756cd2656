"""Reports of recorded calls: load a JSONL event file, print it, or write it as HTML.

``render_terminal(path_or_calls, console)`` prints the terminal report;
``write_html(path_or_calls, out_path)`` writes the self-contained HTML report.
"""

from .calls import Call, LineError, Report, load, load_lines
from .html import render_html, waterfall_svg, write_html
from .terminal import render_terminal

__all__ = [
    "Call",
    "LineError",
    "Report",
    "load",
    "load_lines",
    "render_html",
    "render_terminal",
    "waterfall_svg",
    "write_html",
]
