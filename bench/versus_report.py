"""The Markdown table of bench/versus.sh, from the rows the load script left
for each round: <name>-<n>.tsv (the other implementation) and
quill-<n>/results.tsv.

Usage: versus_report.py NAME RUN_DIR
"""

import pathlib
import sys


def rounds(paths):
    """endpoint -> (description, [(req/s, p99 ms, CPU % of one core, failed answers)])"""
    found = {}
    for path in paths:
        for line in path.read_text().splitlines():
            name, desc, rps, _p50, p99, non2xx, sockerr, srv, pg = line.split("\t")[:9]
            found.setdefault(name, (desc, []))[1].append(
                (float(rps), float(p99), float(srv) + float(pg), int(non2xx) + int(sockerr)))
    return found


def span(values, fmt):
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)}-{fmt(high)}"


def mean_rate(rows):
    return sum(r[0] for r in rows) / len(rows)


def cpu_per_request(rows):
    """ms of CPU a request: 100 % of one core at R req/s is 10/R ms."""
    loaded = [r for r in rows if r[0] > 0]
    if not loaded:
        return "-"
    return f"{sum(r[2] * 10 / r[0] for r in loaded) / len(loaded):.2f}"


def main():
    name, run = sys.argv[1], pathlib.Path(sys.argv[2])
    other = rounds(sorted(run.glob(f"{name}-*.tsv")))
    quill = rounds(sorted(run.glob("quill-*/results.tsv")))
    count = lambda v: f"{v:,.0f}"
    millis = lambda v: f"{v:.1f}"
    print()
    print(f"| endpoint | {name} req/s | Quill req/s | Quill / {name} | p99 ms {name} / Quill | "
          f"ms of CPU a request (server + PostgreSQL) {name} / Quill | failed answers {name} / Quill |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for endpoint in list(other) + [e for e in quill if e not in other]:
        desc, theirs = other.get(endpoint) or (quill[endpoint][0], [])
        ours = quill.get(endpoint, (desc, []))[1]
        if not theirs or not ours:
            print(f"| {desc} | {'ran' if theirs else 'did not run'} | {'ran' if ours else 'did not run'} "
                  "| - | - | - | - |")
            continue
        ratio = f"{mean_rate(ours) / mean_rate(theirs):.2f}x" if mean_rate(theirs) else "-"
        print(f"| {desc} | {span([r[0] for r in theirs], count)} | {span([r[0] for r in ours], count)} "
              f"| {ratio} "
              f"| {span([r[1] for r in theirs], millis)} / {span([r[1] for r in ours], millis)} "
              f"| {cpu_per_request(theirs)} / {cpu_per_request(ours)} "
              f"| {sum(r[3] for r in theirs)} / {sum(r[3] for r in ours)} |")
    print()
    print("Ranges are over the rounds; the ratio is of the means. CPU counts the server's processes "
          "and PostgreSQL, not RabbitMQ or Redis (the load script's rest of the machine). Failed "
          "answers (non-2xx and socket errors, all rounds) count in req/s: a side with any is not "
          "comparable on that endpoint.")


if __name__ == "__main__":
    main()
