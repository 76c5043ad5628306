"""Stopping cleanly on SIGTERM / SIGINT: the loop finishes its step, saves and exits 0.

Cloud TPU VMs (and most schedulers) send SIGTERM before they take the machine away; Ctrl-C
sends SIGINT. Both only set a flag here, which the training loop reads after each step; a
second SIGINT interrupts at once (the default behaviour), for when a save itself hangs.

Multi-host runs leave SIGTERM to JAX's preemption service instead (jax.distributed, read through
orbax's `reached_preemption`), which makes every host stop at the same step: a per-host flag
could stop hosts at different steps and deadlock the collectives.
"""
import logging
import signal
import threading

import jax


class StopRequest:
  """Context manager: `.signal_name` is set once SIGTERM or SIGINT arrives (None before)."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}

  def __enter__(self):
    signals = [signal.SIGINT]
    if jax.process_count() == 1:
      signals.append(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():  # handlers only go there
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    logging.warning('%s received: finishing the current step, then saving a checkpoint and '
                    'stopping (send SIGINT again to stop at once).', self.signal_name)
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
