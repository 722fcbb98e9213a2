"""A small progress line for long loops: done/total, percent, items per second and ETA.

    progress = Progress(total=1_000_000, desc="labelling", unit="img")
    for batch in batches:
      ...
      progress.update(len(batch))
    progress.close()

It prints at most once per `interval` seconds (plus once on `close`), so it costs nothing in a
tight loop and keeps logs of long jobs short. Lines go to stderr by default; pass `stream` to
redirect them (tests use a StringIO). On a terminal the line is redrawn in place; elsewhere
(logs, CI) each report is its own line.
"""
import sys
import time


def format_duration(seconds):
  """Seconds -> 'H:MM:SS' (or '?' when unknown)."""
  if seconds is None or seconds != seconds or seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}"


class Progress:
  """Progress of `total` items (None if unknown); `update(n)` after each n items."""

  def __init__(self, total, desc="", unit="it", interval=1.0, stream=None, clock=time.monotonic):
    self.total = None if total is None else int(total)
    self.desc = desc
    self.unit = unit
    self.interval = float(interval)
    self.stream = sys.stderr if stream is None else stream
    self._clock = clock
    self._start = clock()
    self._last_print = self._start
    self.count = 0
    self._printed = None  # The count of the last line printed.
    self._closed = False
    self._in_place = bool(getattr(self.stream, "isatty", lambda: False)())

  @property
  def elapsed(self):
    return self._clock() - self._start

  def rate(self):
    elapsed = self.elapsed
    return self.count / elapsed if elapsed > 0 else 0.0

  def eta(self):
    """Seconds left at the average rate so far; None when it cannot be estimated."""
    rate = self.rate()
    if self.total is None or rate <= 0:
      return None
    return max(self.total - self.count, 0) / rate

  def line(self):
    parts = [f"{self.desc}: " if self.desc else ""]
    if self.total:
      parts.append(f"{self.count}/{self.total} {self.unit} ({100.0 * self.count / self.total:5.1f}%)")
    else:
      parts.append(f"{self.count} {self.unit}")
    parts.append(f" {self.rate():.1f} {self.unit}/s")
    parts.append(f" elapsed {format_duration(self.elapsed)}")
    if self.total:
      parts.append(f" ETA {format_duration(self.eta())}")
    return "".join(parts)

  def _print(self, final=False):
    self._printed = self.count
    text = self.line()
    if self._in_place:
      self.stream.write("\r" + text + ("\n" if final else ""))
    else:
      self.stream.write(text + "\n")
    self.stream.flush()

  def update(self, n=1):
    self.count += int(n)
    now = self._clock()
    if now - self._last_print >= self.interval:
      self._last_print = now
      self._print()

  def close(self):
    """Prints the final line once (unless the last line already showed the final count);
    later calls do nothing."""
    if not self._closed:
      self._closed = True
      if self._printed != self.count or self._in_place:
        self._print(final=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
