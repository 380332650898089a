"""The benchmarks' load verdict (benchmarks/_load.py) on made-up load readings."""
import os
import sys
import time

import pytest

from benchmarks import _load  # pylint: disable=g-import-not-at-top,wrong-import-position


class FakeMachine:
  """Scripted readings: each ``record`` consumes one (load1, machine busy s, own s) triple (the
  last one repeats); one second of wall time passes between readings."""

  def __init__(self, readings):
    self.readings = list(readings)
    self.n = -1
    self.i = -1

  def loadavg(self):
    self.n += 1
    self.i = min(self.n, len(self.readings) - 1)
    return (self.readings[self.i][0], 0.0, 0.0)

  def busy(self):
    return self.readings[self.i][1]

  def own(self):
    return self.readings[self.i][2]

  def clock(self):
    return float(self.n)


def monitor(readings, cpus=2):
  m = FakeMachine(readings)
  mon = _load.LoadMonitor(cpus=cpus, loadavg=m.loadavg, busy=m.busy, own=m.own, clock=m.clock)
  for r in range(1, len(readings)):
    mon.record(f'round {r}')
  return mon


def test_quiet_run_where_the_benchmark_alone_fills_the_cores():
  # Start load 0.3 on 2 CPUs; then the benchmark itself keeps both cores busy (load ~2): the
  # machine's busy time grows 2 s per second and all of it is ours.
  mon = monitor([(0.3, 100.0, 5.0), (1.2, 102.0, 7.0), (1.9, 104.0, 9.0)])
  assert mon.reasons() == [] and not mon.loaded()
  assert mon.samples[-1].others == 0.0
  assert 'quiet' in mon.report() and 'LOADED' not in mon.report()


def test_start_load_over_half_the_cores_is_loaded():
  mon = monitor([(1.01, 100.0, 5.0), (1.5, 102.0, 7.0)])
  assert mon.loaded()
  assert '1-min load 1.01 at start > 0.5 x 2 CPUs' in mon.report()
  assert 'LOADED -- do not quote' in mon.report()
  assert not monitor([(0.99, 100.0, 5.0), (1.5, 102.0, 7.0)]).loaded()


def test_others_using_the_cpus_during_the_run_is_loaded():
  # Quiet start, then in round 2 the machine was busy 2 s but we used 1.4 s: others took
  # 0.6 s of 2 CPU-seconds = 30% > 25%.
  mon = monitor([(0.2, 100.0, 5.0), (1.0, 102.0, 7.0), (1.5, 104.0, 8.4)])
  assert [round(s.others, 2) for s in mon.samples[1:]] == [0.0, 0.3]
  assert mon.loaded() and 'up to 30% of the CPUs' in mon.report()
  # 20% is tolerated.
  assert not monitor([(0.2, 100.0, 5.0), (1.5, 102.0, 6.6)]).loaded()


def test_without_proc_stat_a_later_load_over_one_and_a_half_cores_is_loaded():
  def no_stat(readings):
    return monitor([(l, None, o) for l, _, o in readings])
  assert no_stat([(0.2, 0, 5.0), (3.1, 0, 7.0)]).loaded()
  assert not no_stat([(0.2, 0, 5.0), (2.9, 0, 7.0)]).loaded()


def test_refuse_under_load_exits_nonzero_only_when_loaded(capsys):
  with pytest.raises(SystemExit) as e:
    _load.finish(monitor([(1.5, 100.0, 5.0), (1.5, 102.0, 7.0), (1.5, 104.0, 9.0)]), True)
  assert e.value.code == _load.LOADED_EXIT_CODE != 0
  assert 'LOADED' in capsys.readouterr().out
  _load.finish(monitor([(0.1, 100.0, 5.0), (0.5, 102.0, 7.0), (0.5, 104.0, 9.0)]), True)
  _load.finish(monitor([(1.5, 100.0, 5.0), (1.5, 102.0, 7.0), (1.5, 104.0, 9.0)]), False)
  with pytest.raises(SystemExit):
    _load.refuse_at_start(monitor([(1.5, 100.0, 5.0)]), True)


def test_real_machine_readings_are_sane():
  """The default readers on this machine: ours is the CPU time this thread burns between two
  samples, the machine's busy time includes it, and others' share is a fraction."""
  mon = _load.LoadMonitor()
  t0 = time.thread_time()
  while time.thread_time() - t0 < 0.3:   # keep one core busy, so both counters must move
    pass
  burned = time.thread_time() - t0
  mon.record('again')
  first, last = mon.samples
  assert mon.cpus == os.cpu_count() and [first.label, last.label] == ['start', 'again']
  assert all(len(s.loadavg) == 3 and min(s.loadavg) >= 0 for s in mon.samples)
  wall, own = last.wall - first.wall, last.own - first.own
  # os.times() counts in clock ticks (10 ms): allow two either way.
  tick = 2.0 / os.sysconf('SC_CLK_TCK')
  assert wall >= burned - 0.01, (wall, burned)
  assert own >= burned - tick, (own, burned)
  if not os.path.exists('/proc/stat'):
    assert first.busy is None and last.others is None
    return
  busy = last.busy - first.busy
  # /proc/stat counts every CPU, ours included, and never more than all of them for the wall.
  assert own - tick * mon.cpus <= busy <= wall * mon.cpus + tick * mon.cpus, (own, busy, wall)
  assert 0.0 <= last.others <= 1.0 + tick / wall, last.others
