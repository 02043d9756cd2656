"""Reports of recorded calls: read a JSONL record file in one pass, print it, or write it as
JSON or HTML.

``scan(path, options, on_call)`` reads a file of any size in bounded memory and hands over
each call as it ends; ``render_terminal(path_or_calls, console)`` prints the terminal
report; ``write_html(path_or_calls, out_path)`` writes the self-contained HTML report;
``load(path)`` keeps every call in memory.
"""

from ..records import LineError
from .calls import Call, Report, load, load_lines
from .fleet import Fleet, FleetTotals
from .html import HTMLWriter, render_html, waterfall_svg, write_html
from .jsonout import JSONWriter
from .stream import SORTS, ReportOptions, ScanResult, scan
from .terminal import TerminalWriter, render_terminal

__all__ = [
    "SORTS",
    "Call",
    "Fleet",
    "FleetTotals",
    "HTMLWriter",
    "JSONWriter",
    "LineError",
    "Report",
    "ReportOptions",
    "ScanResult",
    "TerminalWriter",
    "load",
    "load_lines",
    "render_html",
    "render_terminal",
    "scan",
    "waterfall_svg",
    "write_html",
]
