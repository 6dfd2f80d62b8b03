"""How long a person at a shell waits: `milco-os --help`, `version`, one cold `search` with the default model,
and the interactive search mode that keeps the model loaded (per further query).

    .venv/bin/python bench/startup.py --url http://127.0.0.1:9260            # milco-mini, 3 runs each

Every measurement is a fresh `milco-os` process (python -m milco_os.cli), timed from start to exit, median of
``--runs``; the model's files are in the cache (warm page cache: the second of two runs a user makes). The
interactive mode is timed with 1 and with 1 + N queries on stdin; the difference over N is the time per
further query. Results: a table on stdout and ``reports/bench/startup.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import log, machine, model_arg, text_table, write_json

QUERIES = ["Seitenränder ändern", "insert a page break", "modifier la police", "cambiar el idioma",
           "numérotation des pages", "Tabelle sortieren", "print selection only", "guardar como PDF"]
TARGETS = {"--help": 0.5, "search (cold, one query)": 5.0}


def timed(args: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "milco_os.cli", *args], env=env, input=stdin, text=True,
                         capture_output=True, timeout=600)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"milco-os {' '.join(args)} failed: {run.stderr.strip()[-500:]}")
    return elapsed


def median_of(runs: int, args: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    return statistics.median(timed(args, env, stdin) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="milco-mini", type=model_arg)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "MILCO_OS_OPENSEARCH_URL": args.url, "MILCO_OS_MODEL": args.model}
    index = "bench-startup"
    sample = Path(__file__).resolve().parents[1] / "milco_os" / "data" / "demo_documents.jsonl"
    subprocess.run([sys.executable, "-m", "milco_os.cli", "index", "create", index, "--replicas", "0"], env=env,
                   capture_output=True, text=True, check=False)  # exists from an earlier run: fine
    timed(["ingest", str(sample), "--index", index, "--dead-letter", os.devnull], env)
    search = ["search", QUERIES[0], "--index", index]
    log("warm-up (page cache) ...")
    timed(search, env)
    rows = {
        "--help": median_of(args.runs, ["--help"], env),
        "version": median_of(args.runs, ["version"], env),
        "search (cold, one query)": median_of(args.runs, search, env),
    }
    one = median_of(args.runs, ["search", "--index", index], env, QUERIES[0] + "\n")
    many = median_of(args.runs, ["search", "--index", index], env, "\n".join(QUERIES) + "\n")
    rows["interactive search, per further query"] = (many - one) / (len(QUERIES) - 1)
    table = [[name, f"{seconds:.2f}", f"{TARGETS[name]:g}" if name in TARGETS else "",
              ("met" if seconds < TARGETS[name] else "MISSED") if name in TARGETS else ""]
             for name, seconds in rows.items()]
    print(text_table(["what", "seconds", "target", ""], table))
    write_json("startup", {"machine": machine(), "model": args.model, "runs": args.runs, "seconds": rows,
                           "targets_s": TARGETS})


if __name__ == "__main__":
    main()
