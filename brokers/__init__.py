"""Brokers behind one protocol (brokers/base.py): the local paper broker and Alpaca paper."""

from __future__ import annotations


def make_broker(settings, *, clock=None):
    """The configured broker (``settings.broker``: local | alpaca)."""
    if str(settings.broker) == "alpaca":
        from brokers.alpaca import AlpacaPaperBroker

        return AlpacaPaperBroker.from_settings(settings)
    from brokers.local import LocalPaperBroker

    return LocalPaperBroker.from_settings(settings, clock=clock)
