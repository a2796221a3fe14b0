"""Ports: what the service needs from the outside world, as ``typing.Protocol`` classes.

Each method's docstring is its contract; ``tests/contract/`` holds one suite per port that
every adapter must pass.
"""
