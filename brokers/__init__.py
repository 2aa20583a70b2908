"""Brokers behind one protocol (brokers/base.py): the local paper broker (brokers/local.py, the simulated
broker of brokers/simulated.py persisted by warehouse/paper.py) and Alpaca paper (brokers/alpaca.py).
``tasks.resources.make_broker`` builds the configured one."""
