"""A worker process for the two-process lock test: writes and reads the same warehouse file."""

import sys

import pandas as pd

from warehouse.db import LockPolicy, Warehouse


def main(path: str, name: str, n: int) -> None:
    wh = Warehouse(path, LockPolicy(timeout_s=60, backoff_initial_s=0.01, backoff_max_s=0.2))
    for i in range(n):
        ts = pd.Timestamp("2024-01-02", tz="UTC") + pd.Timedelta(days=i)
        with wh.transaction() as con:
            con.execute(
                "INSERT INTO bars VALUES (?, '1d', ?, 1, 2, 0.5, 1.5, 100, 'test', ?, now())",
                [name, ts, f"{name}-{i}"],
            )
            # Hold the lock a little so the other process really meets it.
            con.execute("SELECT count(*) FROM range(200000)").fetchall()
        with wh.read() as con:
            con.execute("SELECT count(*) FROM bars WHERE symbol = ?", [name]).fetchall()
    print("done", name, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
