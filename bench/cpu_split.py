"""The table of bench/cpu-split.sh: ms of CPU per request by component.

Usage: cpu_split.py SNAPSHOTS CLK_TCK "ENDPOINT..." where SNAPSHOTS holds one
snapshot before each endpoint and one after the last; endpoint k's window is
from snapshot k to snapshot k + 1. A snapshot's process lines are
"<component> <pid> <ticks>"; a process counts what it spent since its own
earlier reading (all of it when it started inside the window).
"""

import sys


def snapshots(path):
    taken = []
    for line in open(path):
        fields = line.split()
        if fields[0] == "at":
            taken.append({"at": float(fields[1]), "ticks": {}, "order": []})
        elif len(fields) == 2:
            taken[-1][fields[0]] = int(fields[1])
        else:
            component, pid, ticks = fields
            taken[-1]["ticks"][(component, pid)] = int(ticks)
            if component not in taken[-1]["order"]:
                taken[-1]["order"].append(component)
    return taken


def spent(before, after, component):
    """Ticks `component`'s processes spent between the two snapshots."""
    return sum(
        ticks - before["ticks"].get(key, 0)
        for key, ticks in after["ticks"].items()
        if key[0] == component
    )


def main(path, clk_tck, endpoints):
    taken = snapshots(path)
    endpoints = endpoints.split()
    if len(taken) != len(endpoints) + 1:
        sys.exit(f"{len(taken)} snapshots for {len(endpoints)} endpoints")
    windows = list(zip(taken, taken[1:]))
    for (a, b), endpoint in zip(windows, endpoints):
        if b["requests"] <= a["requests"]:
            sys.exit(f"{endpoint}: no request in the gateway's access log (is RUST_LOG hiding it?)")
    hz = int(clk_tck)
    components = taken[0]["order"]

    def ms(component):
        return lambda a, b: spent(a, b, component) * 1000 / hz / (b["requests"] - a["requests"])

    print("| ms of CPU per request | " + " | ".join(endpoints) + " |")
    print("|---|" + "--:|" * len(endpoints))
    for component in components:
        print(f"| {component} | " + " | ".join(f"{ms(component)(a, b):.3f}" for a, b in windows) + " |")
    total = [sum(ms(c)(a, b) for c in components) for a, b in windows]
    print("| **total** | " + " | ".join(f"**{t:.3f}**" for t in total) + " |")
    print("| requests in the window | "
          + " | ".join(f"{b['requests'] - a['requests']:,} in {b['at'] - a['at']:.1f} s" for a, b in windows) + " |")
    print("| MultiXacts per request | "
          + " | ".join(f"{(b['multixacts'] - a['multixacts']) / (b['requests'] - a['requests']):.2f}" for a, b in windows)
          + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
