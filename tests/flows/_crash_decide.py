"""A decision run killed at a fault point (the crash tests' victim): ``QTRADER_FAULT`` names the point.

Usage: python _crash_decide.py WAREHOUSE BARS NOW OVERRIDES_JSON
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flows.decide import decide  # noqa: E402

if __name__ == "__main__":
    db, bars, now, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    decide(interval="1d", bars=bars, warehouse=db, now=now, overrides=overrides)
    print("finished without being killed", flush=True)
