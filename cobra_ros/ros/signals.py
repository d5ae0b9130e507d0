"""Stopping a node on SIGINT or SIGTERM in order: its own work first, the rclpy context last.

Nodes start rclpy with `SignalHandlerOptions.NO`: rclpy's handlers would shut the context down at
once, and whatever the node still publishes or logs while it stops would fail with "publisher's
context is invalid".
"""
from __future__ import annotations

import signal
import threading


def stop_event() -> threading.Event:
    """An event that SIGINT or SIGTERM sets; the node's loop ends when it is set."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def ignore_interrupts() -> None:
    """During clean-up: a second Ctrl-C must not cut it short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
