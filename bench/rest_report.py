"""The Markdown report of bench/rest-load.sh, from what it left in its run
directory: the load script's rows (results.tsv) and output (load.out), the
processes' RSS snapshots (rss-*) and their logs (<process>.log).

Usage: rest_report.py RUN_DIR PROCESS...   (the processes in snapshot order)
"""

import collections
import json
import pathlib
import re
import sys

# The gateway's own process first: it is the one a reader looks for.
SHOWN_ORDER = ["gateway", "auth", "content", "notification"]


def endpoint_table(rows):
    print("| endpoint | req/s | p50 ms | p99 ms | non-2xx | socket errors | Quill CPU % | PostgreSQL CPU % |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for row in rows:
        _, desc, rps, p50, p99, non2xx, sockerr, srv, pg = row[:9]
        print(f"| {desc} | {int(rps):,} | {p50} | {p99} | {non2xx} | {sockerr} | {srv} | {pg} |")
    print()
    print("CPU: % of one core over the run (200 = both of 2 cores); Quill = the four processes together.")


def rss_table(run, names):
    snapshots = {}
    for label, file in [("started", "rss-started"), ("idle after seeding", "rss-seeded"),
                        ("after the load", "rss-loaded"), ("peak (VmHWM)", "rss-peak")]:
        path = run / file
        values = path.read_text().split() if path.exists() else []
        snapshots[label] = dict(zip(names, values))
    print("| process | " + " | ".join(f"RSS {label}" for label in snapshots) + " |")
    print("|---|" + "--:|" * len(snapshots))
    order = [n for n in SHOWN_ORDER if n in names] + [n for n in names if n not in SHOWN_ORDER]
    for name in order + ["total"]:
        cells = []
        for values in snapshots.values():
            if name == "total":
                kib = sum(int(v) for v in values.values()) if len(values) == len(names) else None
            else:
                kib = int(values[name]) if name in values else None
            cells.append("n/a" if kib is None else f"{kib / 1024:.1f} MiB")
        print(f"| {name} | " + " | ".join(cells) + " |")


def log_lines(path):
    with open(path, errors="replace") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                # A panic message or anything else not from the subscriber.
                yield {"level": "UNSTRUCTURED", "target": "", "message": line.strip()}


def log_summary(run, names):
    """What each process logged above INFO, and the gateway's answers that
    were not 2xx (seeding included), grouped, most frequent first."""
    print("What the processes logged above INFO (seeding, warm-ups and runs together):")
    print()
    quiet = True
    for name in names:
        path = run / f"{name}.log"
        if not path.exists():
            continue
        events = collections.Counter()
        statuses = collections.Counter()
        for line in log_lines(path):
            level = line.get("level", "")
            if level in ("WARN", "ERROR", "UNSTRUCTURED"):
                message = str(line.get("message", "")) or json.dumps(line)[:200]
                error = line.get("error") or line.get("status_message") or ""
                detail = f"{message} {error}".strip()
                events[(level, line.get("target", ""), re.sub(r"\s+", " ", detail)[:240])] += 1
            if name == "gateway" and line.get("message") == "finished processing request":
                span = line.get("span", {})
                status = line.get("status") or span.get("http.response.status_code")
                if status is not None and not 200 <= int(status) < 300:
                    statuses[(span.get("otel.name", "?"), int(status))] += 1
        for (level, target, detail), count in events.most_common(10):
            quiet = False
            print(f"- {name}: {count} x {level} {target}: {detail}")
        if len(events) > 10:
            print(f"- {name}: ... and {len(events) - 10} other kinds ({sum(events.values())} lines in all)")
        for (route, status), count in statuses.most_common(10):
            quiet = False
            print(f"- gateway answered {status} to {route}: {count} times")
    if quiet:
        print("- nothing: no warning, no error, no answer other than 2xx")


def main():
    run, names = pathlib.Path(sys.argv[1]), sys.argv[2:]
    rows = [line.split("\t") for line in (run / "results.tsv").read_text().splitlines() if line]
    out = (run / "load.out").read_text()
    seeded = re.search(r"^seeded nonce=\S+: (.*?) in ([\d.]+)s; ", out, re.M)
    print()
    if seeded:
        print(f"Seeding through the API took {seeded.group(2)} s: {seeded.group(1)}.")
        print()
    endpoint_table(rows)
    print()
    rss_table(run, names)
    print()
    log_summary(run, names)


if __name__ == "__main__":
    main()
