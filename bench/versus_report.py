"""The Markdown table of bench/versus.sh, from the rows the load script left
for each round: <name>-<n>.tsv (the other implementation) and
quill-<n>/results.tsv.

Usage: versus_report.py NAME RUN_DIR
"""

import pathlib
import sys


def rounds(paths):
    """endpoint -> (description, [(req/s, p99 ms, CPU % of the machine's cores)])"""
    found = {}
    for path in paths:
        for line in path.read_text().splitlines():
            name, desc, rps, _p50, p99, _non2xx, _sockerr, srv, pg = line.split("\t")[:9]
            found.setdefault(name, (desc, []))[1].append((float(rps), float(p99), float(srv) + float(pg)))
    return found


def span(values, fmt):
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)}-{fmt(high)}"


def main():
    name, run = sys.argv[1], pathlib.Path(sys.argv[2])
    other = rounds(sorted(run.glob(f"{name}-*.tsv")))
    quill = rounds(sorted(run.glob("quill-*/results.tsv")))
    count = lambda v: f"{v:,.0f}"
    millis = lambda v: f"{v:.1f}"
    print()
    print(f"| endpoint | {name} req/s | Quill req/s | Quill / {name} | p99 ms {name} / Quill | "
          f"ms of CPU a request (server + PostgreSQL) {name} / Quill |")
    print("|---|--:|--:|--:|--:|--:|")
    for endpoint, (desc, theirs) in other.items():
        ours = quill.get(endpoint, (desc, []))[1]
        if not ours:
            continue
        mean = lambda rows: sum(r[0] for r in rows) / len(rows)
        # CPU columns are % of one core: 100 % at R req/s is 10/R ms a request.
        cpu = lambda rows: sum(r[2] * 10 / r[0] for r in rows) / len(rows)
        print(f"| {desc} | {span([r[0] for r in theirs], count)} | {span([r[0] for r in ours], count)} "
              f"| {mean(ours) / mean(theirs):.2f}x "
              f"| {span([r[1] for r in theirs], millis)} / {span([r[1] for r in ours], millis)} "
              f"| {cpu(theirs):.2f} / {cpu(ours):.2f} |")
    print()
    print("Ranges are over the rounds; the ratio is of the means. CPU counts the server's processes "
          "and PostgreSQL, not RabbitMQ or Redis (the load script's rest of the machine).")


if __name__ == "__main__":
    main()
