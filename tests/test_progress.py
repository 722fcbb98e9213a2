"""rgd.runtime.progress: rate-limited lines with count, rate and ETA."""
import io

from rgd.runtime.progress import Progress, format_duration


class FakeClock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_progress_prints_at_most_once_per_interval_with_rate_and_eta():
  clock, out = FakeClock(), io.StringIO()
  p = Progress(1000, "labelling", "img", interval=1.0, stream=out, clock=clock)
  clock.t += 0.5
  p.update(100)            # 0.5 s: too early to print
  assert out.getvalue() == ""
  clock.t += 0.5
  p.update(100)            # 1 s, 200 done: 200 img/s, 800 left -> 4 s
  assert out.getvalue() == ("labelling: 200/1000 img ( 20.0%) 200.0 img/s elapsed 0:00:01 "
                            "ETA 0:00:04\n")
  clock.t += 0.2
  p.update(800)            # done, but < 1 s since the last line
  assert out.getvalue().count("\n") == 1
  p.close()
  p.close()
  lines = out.getvalue().splitlines()
  assert len(lines) == 2 and lines[1].startswith("labelling: 1000/1000 img (100.0%) 833.3 img/s")
  assert lines[1].endswith("ETA 0:00:00")


def test_unknown_total_and_durations():
  clock, out = FakeClock(), io.StringIO()
  with Progress(None, "", "rec", stream=out, clock=clock) as p:
    clock.t += 2
    p.update(10)
  assert out.getvalue().splitlines() == ["10 rec 5.0 rec/s elapsed 0:00:02"]  # Not twice.
  assert format_duration(3725) == "1:02:05" and format_duration(None) == "?"
