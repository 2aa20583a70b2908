import logging
import os

import pytest

# Keep tests off the user's Prefect home and away from any configured server.
_PREFECT_HOME = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "prefect-test")
os.makedirs(_PREFECT_HOME, exist_ok=True)
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.pop("PREFECT_API_URL", None)
os.environ["QTRADER_PREFECT_UI_URL"] = ""  # never attach to a `make ui` server running on this machine
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every test that runs a real flow (costs ~8 s once; its new database
    migrates first, which takes 30 s and more on two loaded cores: the same allowance as the CLI's)."""
    from prefect.testing.utilities import prefect_test_harness

    from qtrader.prefect_env import STARTUP_TIMEOUT_S

    with prefect_test_harness(server_startup_timeout=STARTUP_TIMEOUT_S):
        yield


@pytest.fixture
def warehouse_path(tmp_path):
    return tmp_path / "warehouse.duckdb"


@pytest.fixture(autouse=True)
def _quiet_loggers():
    for name in ("great_expectations", "yfinance", "urllib3", "peewee"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _qtrader_config_restored():
    """`qtrader --config` sets QTRADER_CONFIG for its process; a CLI test must not pass it to the next."""
    old = os.environ.get("QTRADER_CONFIG")
    yield
    if old is None:
        os.environ.pop("QTRADER_CONFIG", None)
    else:
        os.environ["QTRADER_CONFIG"] = old
