"""Benchmark: TextFlowClient (pooled connections) vs. a naive ``requests.post`` per call.

Both send the same N SMS to the bundled emulator (its own process, on loopback) in one run;
the figures and the ratio are printed. Target: the client at least 1.3x the naive rate.

    python bench/client.py [--n 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._emulator_proc import emulator_process  # noqa: E402
from textflow_django.client import TextFlowClient  # noqa: E402
from textflow_django.testing import EMULATOR_API_KEY  # noqa: E402

TARGET = 1.3


def run_client(url: str, n: int) -> float:
    with TextFlowClient(EMULATOR_API_KEY, base_url=url) as client:
        start = time.perf_counter()
        for i in range(n):
            client.send_sms(f"+1202555{i % 10000:04d}", "bench")
        return n / (time.perf_counter() - start)


def run_naive(url: str, n: int) -> float:
    headers = {"Authorization": f"Bearer {EMULATOR_API_KEY}"}
    start = time.perf_counter()
    for i in range(n):
        response = requests.post(  # noqa: S113 - the naive way, as found in the wild
            f"{url}/send-sms",
            json={"phone_number": f"+1202555{i % 10000:04d}", "text": "bench"},
            headers=headers,
            timeout=10,
        )
        response.raise_for_status()
        response.json()
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="SMS per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; medians reported"
    )
    args = parser.parse_args()
    client_rates, naive_rates = [], []
    with emulator_process() as url:
        run_client(url, 100)  # warm both paths up
        run_naive(url, 100)
        for _ in range(args.rounds):
            client_rates.append(run_client(url, args.n))
            naive_rates.append(run_naive(url, args.n))
    client, naive = statistics.median(client_rates), statistics.median(naive_rates)
    ratio = client / naive
    print(f"bench/client.py: {args.n} SMS x {args.rounds} rounds against the emulator")
    print(f"  TextFlowClient (pooled)     {client:8.0f} SMS/s")
    print(f"  naive requests.post per SMS {naive:8.0f} SMS/s")
    print(f"  ratio {ratio:.2f}x (target >= {TARGET}x): {'PASS' if ratio >= TARGET else 'MISS'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
