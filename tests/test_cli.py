"""The callmeter command line: --version, one-line usage errors on stderr, help with defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from callmeter import __version__
from callmeter.cli import run
from test_report_stream import call_lines, write


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_option_and_command(capsys):
    assert invoke(capsys, "--version") == (0, f"{__version__}\n", "")
    assert invoke(capsys, "version") == (0, f"{__version__}\n", "")
    # eager: --version wins over a command and its arguments
    assert invoke(capsys, "--version", "report", "missing.jsonl")[:2] == (0, f"{__version__}\n")


def test_no_arguments_prints_help(capsys):
    code, out, err = invoke(capsys)
    assert code == 0 and "Usage: callmeter" in out and "report" in out and err == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "f.jsonl", "--bogus"], "error: No such option: --bogus"),
        (["report"], "error: Missing argument"),
        (["report", "f.jsonl", "--limit", "0"], "error: Invalid value for '--limit'"),
        (["report", "f.jsonl", "--limit", "ten"], "error: Invalid value for '--limit'"),
        (["report", "f.jsonl", "--sort", "fastest"], "error: Invalid value for '--sort'"),
        (["report", "f.jsonl", "--since", "last tuesday"], "error: Invalid value for '--since'"),
        (["report", "f.jsonl", "--until", "nan"], "error: Invalid value for '--until'"),
        (["report", "f.jsonl", "--turns", "-1"], "error: Invalid value for '--turns'"),
        (["demo", "--tool-latency", "slow"], "error: Invalid value for '--tool-latency'"),
        (["sim", "--port", "http"], "error: Invalid value for '--port'"),
        (["prices", "--bogus", "m"], "error: No such option: --bogus"),
        (["version", "extra"], "error: Got unexpected extra argument"),
        (["frobnicate"], "error: No such command"),
    ],
)
def test_bad_arguments_give_one_line_on_stderr_and_exit_2(capsys, args, message):
    code, out, err = invoke(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1, err
    assert "--help" in err  # says where to look


def test_missing_file_is_one_line_exit_2(capsys, tmp_path):
    code, out, err = invoke(capsys, "report", str(tmp_path / "nope.jsonl"))
    assert (code, out) == (2, "") and err.startswith("error: cannot read") and err.count("\n") == 1


def test_bad_price_file_is_one_line_exit_2(capsys, tmp_path):
    path = write(tmp_path / "c.jsonl", call_lines("c"))
    prices = tmp_path / "p.toml"
    prices.write_text("[openai\nthis is not toml")
    code, out, err = invoke(capsys, "report", path, "--prices", str(prices))
    assert (code, out) == (2, "") and err.startswith("error: ") and err.count("\n") == 1


def test_help_shows_defaults_and_keeps_brackets(capsys):
    code, out, _ = invoke(capsys, "report", "--help")
    assert code == 0
    assert "[default: 40" in out  # --turns
    assert "[default with --limit: recent; without: as the calls end in the file]" in " ".join(
        out.split()
    )  # a bracketed help text is not eaten as markup
    code, out, _ = invoke(capsys, "sim", "--help")
    assert "[default: 8787]" in out and "[default: 127.0.0.1]" in out
    code, out, _ = invoke(capsys, "demo", "--help")
    assert "[default: 0.3]" in out


def test_script_entry_point_one_line_error_no_traceback(tmp_path):
    garbage = tmp_path / "g.jsonl"
    garbage.write_bytes(b"\xff\xfe not json\n" * 3)
    cmd = [sys.executable, "-m", "callmeter", "report", str(garbage)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: no valid record" in done.stderr and done.stdout.strip() == "no calls in the file"
    done = subprocess.run([*cmd, "--bogus"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stdout == ""


def test_output_cut_short_by_a_closed_pipe(tmp_path):
    lines = []
    for i in range(300):
        lines += call_lines(f"c{i}", [1.0, 2.0])
    path = write(tmp_path / "many.jsonl", lines)
    report = subprocess.Popen(
        [sys.executable, "-m", "callmeter", "report", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert report.stdout is not None and report.stderr is not None
    report.stdout.readline()
    report.stdout.close()  # like `callmeter report FILE | head -1`
    err = report.stderr.read().decode()
    assert report.wait(timeout=60) != 0 and "Traceback" not in err


def test_prices_keeps_brackets_and_errors_go_to_stderr(capsys, tmp_path):
    code, out, err = invoke(capsys, "prices", "[openai]x")
    assert code == 1 and out == ""
    assert "no price for [openai]x" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "p.toml"
    bad.write_text("[openai]\n'[x]' = 5\n")
    code, out, err = invoke(capsys, "prices", "gpt-4o-mini", "--file", str(bad))
    assert code == 2 and out == "" and err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
