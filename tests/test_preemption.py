"""SIGTERM in one process: rgd.runtime.preemption.for_strategy gives the plain flag (no
collective), SIGTERM sets it, and restore() puts the previous handler back. Several workers:
tests/test_multi_worker.py::test_sigterm_to_one_worker_stops_both_at_one_step."""
import os
import signal

import tensorflow as tf

from rgd.runtime import preemption


def test_one_process_keeps_the_plain_flag_and_restores_the_handler():
  def previous(signum, frame):
    del signum, frame
  old = signal.signal(signal.SIGTERM, previous)
  try:
    flag = preemption.for_strategy(tf.distribute.get_strategy())
    assert type(flag) is preemption.PreemptionFlag  # pylint: disable=unidiomatic-typecheck
    assert not flag.should_stop()
    os.kill(os.getpid(), signal.SIGTERM)  # handled between bytecodes, before the next line
    assert flag.should_stop() and flag.should_stop()  # stays set
    flag.restore()
    assert signal.getsignal(signal.SIGTERM) is previous
  finally:
    signal.signal(signal.SIGTERM, old)
