"""mcastd benchmarks: answered rate, loss, latency and memory against the floor and upstream.

Run `python3 -m bench` from the repository root (root needed: it makes its own network
namespace). See docs/benchmarks.md for the last report.
"""
