#!/usr/bin/env python3
"""Turns a compare-bench JSON report (benches/compare.rs) into docs material.

- An SVG plot of durable throughput (events/s, log scale) against publisher count, one panel
  per event size, for this WAL (each backend and mode) and the references (naive WAL,
  okaywal, and the disk's 1 MiB write+fdatasync limit converted to events of that size).
- With --markdown, the tables of docs/benchmarks.md (machine, targets, matrix, disk, replay,
  sweeps, end to end) generated from the same report, so the prose and the numbers cannot
  drift apart.
- With --e2e-svg, a plot of the end-to-end section: per event size, for each publisher mode
  and count, the WAL alone's durable events/s next to the connector's broker-acknowledged
  events/s (medians over rounds as bars, every round as a dot), with the median ratio.

Standard library only (no matplotlib): the SVG is written by hand.

Usage: scripts/plot-throughput.py REPORT.json [--svg OUT.svg] [--markdown OUT.md]
                                   [--e2e-svg OUT.svg]
"""

import argparse
import json
import math
import sys
from html import escape

PANEL_W, PANEL_H = 330, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 62, 12, 34, 46
COLOURS = {
    ("wal", "uring", "pipelined"): "#1f77b4",
    ("wal", "uring", "await"): "#6baed6",
    ("wal", "portable", "pipelined"): "#2ca02c",
    ("wal", "portable", "await"): "#98df8a",
    ("wal", "uring", "batch"): "#17becf",
    ("wal", "portable", "batch"): "#8c564b",
    ("naive", None, "await"): "#d62728",
    ("okaywal", None, "await"): "#ff7f0e",
}


def series_label(system, backend, mode, window):
    if system == "wal":
        how = {
            "pipelined": f"{window} in flight/publisher",
            "batch": f"append_batch of {window}, awaited",
        }.get(mode, "each append awaited")
        return f"this WAL ({backend}), {how}"
    if system == "naive":
        return "naive WAL (mutex + write + fdatasync per event)"
    return "okaywal 0.3 (commit per entry)"


def dash_of(key):
    """Stroke pattern of a series: dotted for awaited appends, long dashes for batches."""
    if key[0] != "wal":
        return ""
    return {"await": "2,2", "batch": "8,3"}.get(key[2], "")


def collect_series(report, event_bytes):
    series = {}
    for run in report["runs"]:
        if run["event_bytes"] != event_bytes or run["variant"]:
            continue
        key = (run["system"], run["backend"], run["mode"])
        series.setdefault(key, []).append((run["publishers"], run["events_per_s"]))
    for points in series.values():
        points.sort()
    return series


def disk_limit_events(report, event_bytes):
    for disk in report["disk"]:
        if disk["block_bytes"] == 1 << 20 and disk["file_state"] == "fallocated":
            return disk["mb_per_s"] * 1e6 / event_bytes
    return None


def render_svg(report):
    sizes = sorted({run["event_bytes"] for run in report["runs"]})
    publishers = sorted({run["publishers"] for run in report["runs"]})
    if not sizes or not publishers:
        sys.exit("the report has no matrix runs (section 'matrix')")
    values = [run["events_per_s"] for run in report["runs"] if run["events_per_s"] > 0]
    values += [v for v in (disk_limit_events(report, s) for s in sizes) if v]
    y_lo = 10 ** math.floor(math.log10(min(values)))
    y_hi = 10 ** math.ceil(math.log10(max(values)))
    width = max(PANEL_W * len(sizes), 440)
    series_count = len({(r["system"], r["backend"], r["mode"]) for r in report["runs"] if not r["variant"]})
    legend_rows = math.ceil((series_count + 1) / max(1, int(width // 440)))
    height = PANEL_H + 20 * legend_rows + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
        f"Durable events/s vs publishers (one run per point; {escape(report['machine']['filesystem'])}, "
        f"{report['machine']['cpus']} CPUs, commit {escape(report['machine']['commit'])})</text>",
    ]
    keys_seen = []
    for index, size in enumerate(sizes):
        x0 = index * PANEL_W + MARGIN_L
        y0 = 20 + MARGIN_T
        plot_w = PANEL_W - MARGIN_L - MARGIN_R
        plot_h = PANEL_H - MARGIN_T - MARGIN_B

        def px(p):
            if len(publishers) == 1:
                return x0 + plot_w / 2
            span = math.log2(publishers[-1]) - math.log2(publishers[0])
            return x0 + (math.log2(p) - math.log2(publishers[0])) / span * plot_w

        def py(v):
            frac = (math.log10(v) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
            return y0 + plot_h - frac * plot_h

        out.append(
            f'<text x="{x0 + plot_w / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">'
            f"{size} B events</text>"
        )
        out.append(
            f'<rect x="{x0}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>'
        )
        decade = y_lo
        while decade <= y_hi * 1.001:
            y = py(decade)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(
                f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{human(decade)}</text>'
            )
            decade *= 10
        for p in publishers:
            x = px(p)
            out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + plot_h}" stroke="#f2f2f2"/>')
            out.append(f'<text x="{x:.1f}" y="{y0 + plot_h + 14}" text-anchor="middle">{p}</text>')
        out.append(
            f'<text x="{x0 + plot_w / 2}" y="{y0 + plot_h + 30}" text-anchor="middle">publishers</text>'
        )
        if index == 0:
            out.append(
                f'<text transform="translate({x0 - 48},{y0 + plot_h / 2}) rotate(-90)" '
                f'text-anchor="middle">durable events/s</text>'
            )
        limit = disk_limit_events(report, size)
        if limit:
            y = py(limit)
            out.append(
                f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + plot_w}" y2="{y:.1f}" stroke="#555" '
                f'stroke-dasharray="5,4"/>'
            )
        for key, points in collect_series(report, size).items():
            colour = COLOURS.get(key, "#9467bd")
            if key not in keys_seen:
                keys_seen.append(key)
            path = " ".join(f"{px(p):.1f},{py(max(v, y_lo)):.1f}" for p, v in points)
            dash = f' stroke-dasharray="{dash_of(key)}"' if dash_of(key) else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            for p, v in points:
                out.append(f'<circle cx="{px(p):.1f}" cy="{py(max(v, y_lo)):.1f}" r="3" fill="{colour}"/>')
    legend_y = 20 + PANEL_H + 8
    entries = [
        (COLOURS.get(key, "#9467bd"), series_label(*key, report["window"]), dash_of(key))
        for key in keys_seen
    ]
    entries.append(("#555", "disk limit: 1 MiB O_DIRECT write + fdatasync per block, as events/s", "5,4"))
    columns = max(1, int(width // 440))
    rows = math.ceil(len(entries) / columns)
    for i, (colour, label, dashed) in enumerate(entries):
        column, row = divmod(i, rows)
        x = 20 + column * (width / columns)
        y = legend_y + row * 20
        dash = f' stroke-dasharray="{dashed}"' if dashed else ""
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 26}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x + 32}" y="{y + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


E2E_COLOURS = {"wal_only": "#1f77b4", "end_to_end": "#d62728"}


def render_e2e_svg(report):
    """Bars of WAL-only vs end-to-end events/s per cell (log scale), one panel per size."""
    summaries = report.get("e2e") or []
    rounds = report.get("e2e_rounds") or []
    if not summaries:
        sys.exit("the report has no end-to-end runs (section 'e2e')")
    backends = sorted({s["backend"] for s in summaries})
    sizes = sorted({s["event_bytes"] for s in summaries})
    cells = sorted(
        {(s["mode"], s["publishers"]) for s in summaries},
        key=lambda c: (c[0] != "await", c[1]),
    )
    panel_w = max(PANEL_W, 90 * len(cells) + MARGIN_L + MARGIN_R)
    panels = [(b, size) for b in backends for size in sizes]
    width = panel_w * len(panels)
    height = PANEL_H + 90
    values = [s["wal_only_events_per_s"] for s in summaries]
    values += [s["acked_events_per_s"] for s in summaries]
    values += [r["wal_only"]["events_per_s"] for r in rounds]
    values += [r["end_to_end"]["acked_events_per_s"] for r in rounds]
    values = [v for v in values if v > 0]
    y_lo = 10 ** math.floor(math.log10(min(values)))
    y_hi = 10 ** math.ceil(math.log10(max(values)))
    m = report["machine"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
        f"End to end (publish → broker ack) vs the WAL alone: events/s, median of "
        f"{max((s['rounds'] for s in summaries), default=0)} rounds "
        f"({escape(m['filesystem'])}, {m['cpus']} CPUs, commit {escape(m['commit'])})</text>",
    ]
    for index, (backend, size) in enumerate(panels):
        x0 = index * panel_w + MARGIN_L
        y0 = 20 + MARGIN_T
        plot_w = panel_w - MARGIN_L - MARGIN_R
        plot_h = PANEL_H - MARGIN_T - MARGIN_B

        def py(v):
            frac = (math.log10(max(v, y_lo)) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
            return y0 + plot_h - frac * plot_h

        out.append(
            f'<text x="{x0 + plot_w / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">'
            f"{size} B events, {escape(backend)}</text>"
        )
        out.append(f'<rect x="{x0}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
        decade = y_lo
        while decade <= y_hi * 1.001:
            y = py(decade)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{human(decade)}</text>')
            decade *= 10
        if index == 0:
            out.append(
                f'<text transform="translate({x0 - 48},{y0 + plot_h / 2}) rotate(-90)" '
                f'text-anchor="middle">events/s</text>'
            )
        slot = plot_w / len(cells)
        bar_w = min(28, slot / 3)
        for c, (mode, publishers) in enumerate(cells):
            summary = next(
                (
                    s
                    for s in summaries
                    if s["backend"] == backend
                    and s["event_bytes"] == size
                    and s["mode"] == mode
                    and s["publishers"] == publishers
                ),
                None,
            )
            centre = x0 + slot * (c + 0.5)
            label = f"{publishers} {'awaiting' if mode == 'await' else 'batching'}"
            out.append(f'<text x="{centre:.1f}" y="{y0 + plot_h + 14}" text-anchor="middle">{label}</text>')
            if summary is None:
                continue
            cell_rounds = [
                r
                for r in rounds
                if r["backend"] == backend
                and r["event_bytes"] == size
                and r["mode"] == mode
                and r["publishers"] == publishers
            ]
            for offset, key, median, per_round in (
                (-1, "wal_only", summary["wal_only_events_per_s"], [r["wal_only"]["events_per_s"] for r in cell_rounds]),
                (0, "end_to_end", summary["acked_events_per_s"], [r["end_to_end"]["acked_events_per_s"] for r in cell_rounds]),
            ):
                x = centre + offset * (bar_w + 2) + 1
                top = py(median)
                colour = E2E_COLOURS[key]
                out.append(
                    f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar_w:.1f}" height="{y0 + plot_h - top:.1f}" '
                    f'fill="{colour}" fill-opacity="0.55" stroke="{colour}"/>'
                )
                for v in per_round:
                    out.append(f'<circle cx="{x + bar_w / 2:.1f}" cy="{py(v):.1f}" r="2.2" fill="{colour}"/>')
            tops = [summary["wal_only_events_per_s"], summary["acked_events_per_s"]]
            tops += [r["wal_only"]["events_per_s"] for r in cell_rounds]
            tops += [r["end_to_end"]["acked_events_per_s"] for r in cell_rounds]
            ratio_y = min(py(v) for v in tops if v > 0) - 6
            out.append(
                f'<text x="{centre:.1f}" y="{max(ratio_y, y0 + 10):.1f}" text-anchor="middle" '
                f'font-weight="bold">{summary["acked_vs_wal_only"]:.2f}×</text>'
            )
    legend_y = 20 + PANEL_H + 14
    entries = [
        (E2E_COLOURS["wal_only"], "WAL alone: durable events/s (same workload, run just before)"),
        (E2E_COLOURS["end_to_end"], "connector → reference broker: acknowledged events/s"),
    ]
    for i, (colour, label) in enumerate(entries):
        y = legend_y + i * 18
        out.append(f'<rect x="20" y="{y - 8}" width="22" height="10" fill="{colour}" fill-opacity="0.55" stroke="{colour}"/>')
        out.append(f'<text x="48" y="{y + 1}">{escape(label)}</text>')
    out.append(
        f'<text x="20" y="{legend_y + 2 * 18 + 1}">bars: medians; dots: each round; '
        f"label: median of the per-round ratios (acknowledged ÷ WAL alone)</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def human(value):
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def markdown(report):
    m = report["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs, {round((m['memory_total_kib'] or 0) / 1024 / 1024)} GiB RAM, "
        f"kernel {m['kernel']}, {m['filesystem']} on {m['device']} (bench dir `{m['bench_dir']}`), "
        f"commit `{m['commit']}`. Profile: {'full' if report['full'] else 'quick'}, "
        f"{report['run_seconds']:g} s per run, {report['window']} appends in flight per pipelined publisher.",
        "",
    ]
    if report["targets"]:
        lines += [
            "| target | backend | measured (per round: WAL/reference) | ratio (median) | needed | met |",
            "|---|---|---|---:|---:|---|",
        ]
        for t in report["targets"]:
            needed = ("≤ " if t["at_most"] else "≥ ") + f"{t['required']:g}"
            lines.append(
                f"| {t['target']} | {t['backend']} | {t['measured']} | {t['ratio']:.2f} | {needed} | "
                f"{'**met**' if t['met'] else 'not met'} |"
            )
        lines.append("")
    if report["disk"]:
        lines += [
            "| disk reference | MB/s | ops/s | p50 µs | p99 µs | p99.9 µs |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for d in report["disk"]:
            lat = d["latency"]
            lines.append(
                f"| {d['name']} | {d['mb_per_s']:.1f} | {d['ops_per_s']:.0f} | {lat['p50_us']:.0f} | "
                f"{lat['p99_us']:.0f} | {lat['p999_us']:.0f} |"
            )
        lines.append("")
    if report.get("sweep_summary"):
        lines += [
            "| variant (vs default) | mode | event B | publishers | events/s | MB/s | p50 µs | p99 µs | records/sync | events/s ÷ default | p50 ÷ default |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["sweep_summary"]:
            lines.append(
                f"| {r['variant']} (vs {r['default_variant']}) | {r['mode']} | {r['event_bytes']} | {r['publishers']} | "
                f"{r['events_per_s']:.0f} | {r['mb_per_s']:.1f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
                f"{r['records_per_sync']:.1f} | {r['events_per_s_vs_default']:.2f} | {r['p50_vs_default']:.2f} |"
            )
        lines.append("")
    for title, runs in (("runs", report["runs"]),):
        if not runs:
            continue
        lines += [
            f"| system | backend | mode | variant | event B | publishers | events/s | MB/s | p50 µs | p99 µs | p99.9 µs | records/sync |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in runs:
            lat = r["latency"]
            rps = f"{r['records_per_sync']:.1f}" if r["records_per_sync"] is not None else "–"
            lines.append(
                f"| {r['system']} | {r['backend'] or '–'} | {r['mode']} | {r['variant'] or '–'} | "
                f"{r['event_bytes']} | {r['publishers']} | {r['events_per_s']:.0f} | {r['mb_per_s']:.1f} | "
                f"{lat['p50_us']:.0f} | {lat['p99_us']:.0f} | {lat['p999_us']:.0f} | {rps} |"
            )
        lines.append("")
    if report.get("e2e"):
        lines += [
            "| backend | mode | event B | publishers | WAL alone events/s | end-to-end acked events/s | ratio (median) | WAL p50 µs | durable p50 µs | ack p50 µs | ack p99 µs | ack p99.9 µs | CPU µs/event WAL alone | CPU µs/event end to end | spilled |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in report["e2e"]:
            mode = "awaiting" if s["mode"] == "await" else f"batches of {s['batch_events']}"
            lines.append(
                f"| {s['backend']} | {mode} | {s['event_bytes']} | {s['publishers']} | "
                f"{s['wal_only_events_per_s']:.0f} | {s['acked_events_per_s']:.0f} | {s['acked_vs_wal_only']:.2f} | "
                f"{s['wal_only_p50_us']:.0f} | {s['durable_p50_us']:.0f} | {s['ack_p50_us']:.0f} | "
                f"{s['ack_p99_us']:.0f} | {s['ack_p999_us']:.0f} | {s['wal_only_cpu_us_per_event']:.2f} | "
                f"{s['end_to_end_cpu_us_per_event']:.2f} | {s['spilled_total']} |"
            )
        lines.append("")
    if report["replay"]:
        lines += [
            "| replay | event B | events | events/s | log MB/s | event MB/s | whole-dir log MB/s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["replay"]:
            lines.append(
                f"| {r['backend']} | {r['event_bytes']} | {r['events']} | {r['events_per_s']:.0f} | "
                f"{r['log_mb_per_s']:.0f} | {r['event_mb_per_s']:.0f} | {r['whole_dir_log_mb_per_s']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="compare-*.json written by `cargo bench --bench compare`")
    parser.add_argument("--svg", help="write the throughput plot here")
    parser.add_argument("--markdown", help="write the markdown tables here")
    parser.add_argument("--e2e-svg", help="write the end-to-end plot here")
    args = parser.parse_args()
    try:
        with open(args.report) as handle:
            report = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        sys.exit(f"cannot read {args.report}: {error}")
    if args.svg:
        with open(args.svg, "w") as handle:
            handle.write(render_svg(report))
        print(f"wrote {args.svg}")
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(markdown(report))
        print(f"wrote {args.markdown}")
    if args.e2e_svg:
        with open(args.e2e_svg, "w") as handle:
            handle.write(render_e2e_svg(report))
        print(f"wrote {args.e2e_svg}")
    if not args.svg and not args.markdown and not args.e2e_svg:
        print(markdown(report))


if __name__ == "__main__":
    main()
