"""Start-up cost of a one-flow CLI command on a small input: `qtrader ingest --interval 1d --symbols AAA,BBB`
(60 days of synthetic daily bars, 2 symbols, through the GX gate into a new warehouse).

Timed, each R times (median and min printed), wall clock of the whole command as a user runs it:
  (a) cold: no Prefect server running, so a temporary one starts (on a Prefect home whose database
      exists: the usual case after `make demo` or `make prefect-db`);
  (b) warm: a Prefect server running (as with `make ui`; here on a free port, found through
      QTRADER_PREFECT_UI_URL), which the CLI uses instead of starting one;
  (c) first run on a new Prefect home (its database migrates while the temporary server starts), once.
Where the time goes, each in its own fresh process: importing the flow module (Prefect, pandas, the
flow's tasks) and making the Great Expectations context (importing GX included).

Target: <= 10 s for (a) and (b) on the 2-core development machine.

    .venv/bin/python benchmarks/startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_S = 10.0

from benchmarks.machine import describe  # noqa: E402
from qtrader.prefect_stack import BIN, PrefectStack  # noqa: E402

COMMAND = [str(BIN / "qtrader"), "ingest", "--interval", "1d", "--symbols", "AAA,BBB"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, done.stdout + done.stderr


def run_cli(env: dict[str, str], tmp: Path, tag: str) -> tuple[float, str]:
    """The command on a new warehouse each time (an ingest into an existing one writes nothing new)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=tmp))
    return timed(
        COMMAND, env | {"QTRADER_WAREHOUSE": str(folder / "w.duckdb"), "QTRADER_DATA_DIR": str(folder)}
    )


def python_seconds(code: str, env: dict[str, str]) -> float:
    """Seconds of ``code`` in a fresh interpreter, timed inside it (interpreter start excluded)."""
    wrapped = f"import time; t0 = time.perf_counter()\n{code}\nprint(time.perf_counter() - t0)"
    done = subprocess.run([sys.executable, "-c", wrapped], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=True)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> str:
    ok = statistics.median(values) <= TARGET_S
    return (f"median {statistics.median(values):.1f} s, min {min(values):.1f} s over {len(values)} runs, "
            f"target <= {TARGET_S:.0f} s: {'met' if ok else 'MISSED'}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="qtrader-bench-startup-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QTRADER_"))}
    base |= {"QTRADER_HISTORY_DAYS": "60", "QTRADER_PREFECT_UI_URL": "", "TQDM_DISABLE": "1"}
    home = tmp / "prefect"
    ok = True
    try:
        env = base | {"PREFECT_HOME": str(home)}
        subprocess.run([str(BIN / "prefect"), "--no-prompt", "server", "database", "upgrade", "-y"], cwd=ROOT,
                       env=env, capture_output=True, check=True, timeout=600)  # fmt: skip
        print(f"command: {' '.join(COMMAND[1:])} (60 daily bars x 2 symbols, new warehouse each run)")

        imports = [python_seconds("import flows.ingest", env) for _ in range(args.repeat)]
        gx = [
            python_seconds("from expectations.runtime import context\ncontext()", env)
            for _ in range(args.repeat)
        ]
        print(f"where the time goes (fresh process each): import flows.ingest (Prefect, pandas, tasks) "
              f"median {statistics.median(imports):.1f} s; GX import + context median {statistics.median(gx):.1f} s")  # fmt: skip

        cold = [run_cli(env, tmp, "cold")[0] for _ in range(args.repeat)]
        print(f"(a) cold, temporary server: {summary(cold)}")
        ok &= statistics.median(cold) <= TARGET_S

        with PrefectStack(tmp / "stack") as stack:
            warm_env = base | {"PREFECT_HOME": str(home), "QTRADER_PREFECT_UI_URL": stack.url}
            warm = []
            for _ in range(args.repeat):
                seconds, out = run_cli(warm_env, tmp, "warm")
                assert f"Prefect server at {stack.url}" in out, out[-2000:]
                warm.append(seconds)
        print(f"(b) warm, running server: {summary(warm)}")
        ok &= statistics.median(warm) <= TARGET_S

        fresh, _ = run_cli(base | {"PREFECT_HOME": str(tmp / "fresh-prefect")}, tmp, "fresh")
        print(f"(c) first run on a new Prefect home (database migrated during the start-up): {fresh:.1f} s")
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        ok = False
        print(f"FAILED: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {describe()}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
