"""A decision run that dies between submitting a bracket and recording it (the crash test's victim).

Usage: python _crash_submit.py local WAREHOUSE | python _crash_submit.py alpaca URL (keys from APCA_*).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.brokers.test_reconcile import crash_bracket  # noqa: E402


def main(kind: str, target: str) -> None:
    if kind == "local":
        from warehouse.paper import paper_broker

        broker = paper_broker(target, interval="5m")
    else:
        from brokers.alpaca import AlpacaPaperBroker, alpaca_keys_from_env_or_block

        keys = alpaca_keys_from_env_or_block(load_secret={}.__getitem__)
        broker = AlpacaPaperBroker(keys.api_key, keys.secret_key, target, timeout_s=5.0)
    order = broker.submit_bracket(crash_bracket())
    print("submitted", order.id, flush=True)
    os._exit(0)  # killed here: the warehouse never hears of the order


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
