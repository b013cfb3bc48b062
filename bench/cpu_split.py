"""The table of bench/cpu-split.sh: ms of CPU per request by component.

Usage: cpu_split.py SNAPSHOTS CLK_TCK "ENDPOINT..." where SNAPSHOTS holds one
snapshot before each endpoint and one after the last; endpoint k's window is
from snapshot k to snapshot k + 1.
"""

import sys


def snapshots(path):
    taken = []
    for line in open(path):
        key, value = line.split()
        if key == "at":
            taken.append({"at": float(value)})
        else:
            taken[-1][key] = int(value)
    return taken


def main(path, clk_tck, endpoints):
    taken = snapshots(path)
    endpoints = endpoints.split()
    if len(taken) != len(endpoints) + 1:
        sys.exit(f"{len(taken)} snapshots for {len(endpoints)} endpoints")
    windows = list(zip(taken, taken[1:]))
    components = [k for k in taken[0] if k not in ("at", "requests", "multixacts")]
    print("| ms of CPU per request | " + " | ".join(endpoints) + " |")
    print("|---|" + "--:|" * len(endpoints))

    def row(name, per_request):
        print(f"| {name} | " + " | ".join(per_request(a, b) for a, b in windows) + " |")

    def ms(key):
        return lambda a, b: f"{(b[key] - a[key]) * 1000 / int(clk_tck) / (b['requests'] - a['requests']):.3f}"

    for key in components:
        row(key, ms(key))
    total = lambda a, b: f"**{sum(b[k] - a[k] for k in components) * 1000 / int(clk_tck) / (b['requests'] - a['requests']):.3f}**"
    row("**total**", total)
    row("requests in the window", lambda a, b: f"{b['requests'] - a['requests']:,} in {b['at'] - a['at']:.1f} s")
    row("MultiXacts per request", lambda a, b: f"{(b['multixacts'] - a['multixacts']) / (b['requests'] - a['requests']):.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
