"""The report's lesson: each framework difference as the frameworks' own code side by side.

Per difference (common/differences.py): why it changes numbers; each framework's handling, its code
read from the source when the report is written (so it is never stale); the mistake as a one-line
diff; what the mistake cost when `compare.py --pitfalls` measured it; and the tests that fail when
the handling changes. Then the network as each framework defines it: its layer table and build.
"""

from __future__ import annotations

import base64
import html
import io

from common import differences, spec
from common.differences import DIFFERENCES, NETWORK, Difference, PointerError
from common.interface import TrainConfig
from common.pitfalls import speed_records

MEASURE_COMMAND = "python compare.py --pitfalls"
# A test accuracy below this is no better than guessing one of the ten classes.
CHANCE_ACCURACY = 1 / spec.NUM_CLASSES + 0.05


# ---------------------------------------------------------------------------------------------
# What the measurements say
# ---------------------------------------------------------------------------------------------


def records_by_difference(summary: dict) -> tuple[dict[str, list[dict]], list[dict]]:
    """The pitfall records (and the CPU defaults' measured cost) under their registry entries' titles,
    and those under a title the registry lacks."""
    known: dict[str, list[dict]] = {difference.title: [] for difference in DIFFERENCES}
    unknown = []
    for row in [*(summary.get("pitfalls") or []), *speed_records(summary.get("speed") or {})]:
        (known[row["difference"]] if row.get("difference") in known else unknown).append(row)
    return known, unknown


def shortened(summary: dict) -> bool:
    """Whether the run was shorter than the full recipe (fewer epochs, or a subset of the data)."""
    config = summary.get("config") or {}
    return config.get("epochs", TrainConfig.epochs) < TrainConfig.epochs or bool(config.get("train_subset") or config.get("test_subset"))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def no_effect(row: dict) -> str:
    """Why a record's two numbers cannot show what the mistake costs, or "" when they can."""
    correct, mistaken = row.get("correct"), row.get("mistaken")
    if not (_is_number(correct) and _is_number(mistaken)):
        return ""
    metric = row.get("metric", "")
    if "accuracy" in metric and "spread" not in metric and max(correct, mistaken) < CHANCE_ACCURACY:
        return "both runs are still at chance"
    if correct == mistaken:
        return "both runs give the same number"
    return ""


def honest_note(row: dict, summary: dict) -> str:
    """What to make of a record whose numbers show no cost: a short run names the run that shows it."""
    reason = no_effect(row)
    if not reason:
        return ""
    if shortened(summary):
        return f"This short run cannot show the cost: {reason}. The full recipe shows it: {MEASURE_COMMAND}"
    return f"No cost in this run: {reason}."


def measured(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"  # counts: parameters, features
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value).splitlines()[0][:160]


def own_measurement_line(difference: Difference, rows: list[dict]) -> str:
    """For a difference measured by its own command rather than --pitfalls, how to measure it, until it is."""
    if rows or difference.measured_by == MEASURE_COMMAND:
        return ""
    return f"Not measured on this CPU yet: {difference.measured_by} measures it, and the next comparison here shows it."


def measurement_line(summary: dict) -> str:
    """One line on where the costs come from: this run's measurement, or how to make one."""
    runs = summary.get("pitfall_runs") or {}
    failed = [f"{name} ({(run.get('error') or run.get('status') or '').splitlines()[0][:100]})" for name, run in runs.items() if run.get("status") != "ok"]
    if not summary.get("pitfalls"):
        line = f"Costs are not measured in this run: {MEASURE_COMMAND} makes every mistake for real and measures it."
    else:
        config = summary.get("config") or {}
        line = (
            f"Costs measured by this run's --pitfalls phase ({config.get('epochs', '?')} epochs"
            + (", a subset of the data" if shortened(summary) else "") + "), each mistake against the correct run from the same start."
        )
    return line + (f" Measuring failed in: {'; '.join(failed)}." if failed else "")


# ---------------------------------------------------------------------------------------------
# The code
# ---------------------------------------------------------------------------------------------


def handling_groups(difference: Difference) -> list[tuple[list[str], tuple[str, ...], list[str]]]:
    """(frameworks, code pointers, tests): frameworks that share the same code are one column."""
    groups: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
    for name, handling in difference.handled.items():
        frameworks, tests = groups.setdefault(handling.code, ([], []))
        frameworks.append(name)
        tests += [test for test in handling.tests if test not in tests]
    return [(frameworks, code, tests) for code, (frameworks, tests) in groups.items()]


def source_of(pointer: str) -> str:
    """A pointer's code, or a line saying it no longer resolves (tests/test_differences.py fails then too)."""
    try:
        return differences.code(pointer)
    except PointerError as err:
        return f"# not found: {err}"


def _code_html(pointers: tuple[str, ...]) -> str:
    blocks = [f"<span class='where'># {html.escape(p)}</span>\n{html.escape(source_of(p))}" for p in pointers]
    return f"<pre class='code'>{chr(10).join(blocks)}</pre>"


def _tests_html(tests: list[str]) -> str:
    names = ", ".join(f"<code title='{html.escape(t)}'>{html.escape(t.rpartition('::')[2])}</code>" for t in tests)
    files = sorted({t.partition("::")[0] for t in tests})
    return f"<p class='test'>Guarded by {names} <span class='file'>({html.escape(', '.join(files))})</span></p>"


def _columns_html(columns: list[tuple[str, str]]) -> str:
    """Columns side by side: (caption, body HTML)."""
    cells = "".join(f"<figure><figcaption>{caption}</figcaption>{body}</figure>" for caption, body in columns)
    return f"<div class='columns'>{cells}</div>"


def _diff_html(difference: Difference) -> str:
    return (
        "<pre class='diff'>"
        f"<span class='del'>- {html.escape(difference.correct)}</span>\n<span class='ins'>+ {html.escape(difference.mistake)}</span></pre>"
    )


# ---------------------------------------------------------------------------------------------
# The costs
# ---------------------------------------------------------------------------------------------


def curve_records(rows: list[dict]) -> list[dict]:
    """Records with a curve worth drawing: at least two points in some series."""
    return [row for row in rows if any(len(values) >= 2 for values in (row.get("curves") or {}).values())]


def curves_png(rows: list[dict]) -> bytes:
    """A small plot of the records' curves: one line per framework and series."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(4.6, 2.4), layout="constrained")
    axis = figure.subplots()
    for row in rows:
        for name, values in row["curves"].items():
            axis.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=f"{row['framework']}: {name}")
    axis.set(xlabel=rows[0].get("curve_x", "epoch"), ylabel=rows[0].get("curve_label") or "per epoch")
    values = [v for row in rows for series in row["curves"].values() for v in series]
    if values and min(values) > 0 and max(values) > 100 * min(values):
        axis.set_yscale("log")  # a diverging loss spans orders of magnitude
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize="x-small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _costs_html(rows: list[dict], summary: dict) -> str:
    if not rows:
        return ""
    body = []
    for row in rows:
        note = honest_note(row, summary)
        body.append(
            f"<tr{' class=no-effect' if note else ''}><td>{html.escape(row['framework'])}</td><td><code>{html.escape(row['mistake'])}</code></td>"
            f"<td>{html.escape(row['metric'])}{f'<br><em>{html.escape(note)}</em>' if note else ''}</td>"
            f"<td>{html.escape(measured(row['correct']))}</td><td>{html.escape(measured(row['mistaken']))}</td></tr>"
        )
    table = (
        "<table class='costs'><tr><th>framework</th><th>the mistake, made for real</th><th>measured</th><th>correct</th><th>mistaken</th></tr>"
        + "".join(body) + "</table>"
    )
    drawn = curve_records(rows)
    if drawn:
        table += f"<img class='cost-plot' alt='the measured curves' src='data:image/png;base64,{base64.b64encode(curves_png(drawn)).decode()}'>"
    return table


# ---------------------------------------------------------------------------------------------
# The sections
# ---------------------------------------------------------------------------------------------


def _anchor(title: str) -> str:
    return "difference-" + "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def differences_html(summary: dict) -> str:
    known, unknown = records_by_difference(summary)
    parts = [
        "<h2 id='differences'>The differences</h2>",
        "<p>Each difference the frameworks handle, with each framework's code (read from the source when this report was "
        "written), the mistake as a one-line diff, and the tests that fail if the handling changes.</p>",
        f"<p class='measured'>{html.escape(measurement_line(summary))}</p>",
        "<nav>" + " · ".join(f"<a href='#{_anchor(d.title)}'>{html.escape(d.title)}</a>" for d in DIFFERENCES) + "</nav>",
    ]
    for difference in DIFFERENCES:
        columns = [
            (f"<b>{html.escape(', '.join(frameworks))}</b>", _code_html(code) + _tests_html(tests))
            for frameworks, code, tests in handling_groups(difference)
        ]
        parts.append(
            f"<section class='difference' id='{_anchor(difference.title)}'><h3>{html.escape(difference.title)}</h3>"
            f"<p>{html.escape(difference.why)}</p>{_columns_html(columns)}"
            f"<div class='beside'><div><h4>The mistake</h4>{_diff_html(difference)}</div>"
            f"<div class='cost'>{_costs_html(known[difference.title], summary)}"
            f"{html.escape(own_measurement_line(difference, known[difference.title]))}</div></div></section>"
        )
    if unknown:
        parts.append(
            "<h3>Measured under titles the registry lacks</h3><p>Add them to common/differences.py:</p>"
            + _costs_html(unknown, summary)
        )
    return "\n".join(parts)


def network_html() -> str:
    columns = [(f"<b>{html.escape(name)}</b>", _code_html(pointers)) for name, pointers in NETWORK.items()]
    return (
        "<h2 id='network'>The network in each framework</h2><p>Each framework builds the same spec (common/spec.py) "
        "from its own layer table: spec kind to layer.</p>" + f"<div class='network'>{_columns_html(columns)}</div>"
    )


def differences_markdown(summary: dict) -> list[str]:
    known, unknown = records_by_difference(summary)
    lines = ["## The differences", "", measurement_line(summary)]
    for difference in DIFFERENCES:
        lines += ["", f"### {difference.title}", "", difference.why, "", "| framework | handled in | guarded by |", "|---|---|---|"]
        lines += [
            f"| {', '.join(frameworks)} | {'<br>'.join(f'`{p}`' for p in code)} | {'<br>'.join(f'`{t}`' for t in tests)} |"
            for frameworks, code, tests in handling_groups(difference)
        ]
        lines += ["", "```diff", f"- {difference.correct}", f"+ {difference.mistake}", "```"]
        lines += _costs_markdown(known[difference.title], summary)
        if own_measurement_line(difference, known[difference.title]):
            lines += ["", own_measurement_line(difference, known[difference.title])]
    if unknown:
        lines += ["", "### Measured under titles the registry lacks", *_costs_markdown(unknown, summary)]
    return lines


def _costs_markdown(rows: list[dict], summary: dict) -> list[str]:
    if not rows:
        return []
    lines = ["", "| framework | the mistake | measured | correct | mistaken |", "|---|---|---|---|---|"]
    for row in rows:
        note = honest_note(row, summary)
        cells = [row["framework"], f"`{row['mistake']}`", row["metric"] + (f" ({note})" if note else ""), measured(row["correct"]), measured(row["mistaken"])]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines

