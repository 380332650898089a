"""How busy the machine was while a CPU benchmark ran, and whether its table may be quoted.

On a shared machine other people's processes take cores from both compared sides, and not
alike (PyTorch's eager thread pool suffers more than one XLA executable): a 2-core run at a
1-min load of ~8 once printed PyTorch 3-16x slower than JAX where a quiet run gives JAX
1.4-4.5x slower. So every timing benchmark records the load and flags its table.

Two measures, sampled at the start, after every timed round and at the end:

* ``os.getloadavg()`` (1/5/15-min run-queue averages) and the number of CPUs;
* on Linux, the CPU time *other* processes used between two samples: busy time of all CPUs from
  ``/proc/stat`` minus this process's own CPU time, as a fraction of (wall time x CPUs). The
  load average cannot tell this: a benchmark that keeps every core busy by itself drives the
  1-min load to ~the core count.

Verdict LOADED (do not quote the table) when:

* the 1-min load at the start, before any timing, exceeds ``START_LOAD_PER_CPU`` (0.5) x CPUs
  (someone else is running; the 1-min average lags, so this is conservative after a burst); or
* other processes used more than ``OTHERS_SHARE`` (0.25) of the machine in any interval between
  samples (one busy core of four, half a core of two); or, without ``/proc/stat``,
* the 1-min load at any later sample exceeds ``LATER_LOAD_PER_CPU`` (1.5) x CPUs (this process
  alone can bring it to ~1 x CPUs).
"""
import dataclasses
import os
import sys
import time

START_LOAD_PER_CPU = 0.5
OTHERS_SHARE = 0.25
LATER_LOAD_PER_CPU = 1.5
LOADED_EXIT_CODE = 3


def _busy_seconds():
  """Busy CPU seconds of the whole machine since boot (all CPUs), or None off Linux."""
  try:
    with open('/proc/stat') as f:
      fields = f.readline().split()
  except OSError:
    return None
  # cpu user nice system idle iowait irq softirq steal ...: idle and iowait are not busy;
  # steal is time a hypervisor gave to someone else, i.e. also load from others.
  ticks = [int(v) for v in fields[1:9]]
  busy = sum(ticks) - ticks[3] - ticks[4]
  return busy / os.sysconf('SC_CLK_TCK')


def _own_seconds():
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


@dataclasses.dataclass
class Sample:
  label: str
  wall: float
  loadavg: tuple            # (1, 5, 15)-min
  busy: float | None        # machine busy CPU seconds
  own: float                # this process's CPU seconds
  others: float | None = None   # others' share of the machine since the previous sample


class LoadMonitor:
  """Samples the machine's load; ``verdict()`` says whether the numbers may be quoted.

  ``cpus`` and the readers are arguments so that the verdict can be tested on made-up values.
  """

  def __init__(self, cpus=None, loadavg=os.getloadavg, busy=_busy_seconds, own=_own_seconds,
               clock=time.monotonic):
    self.cpus = cpus or os.cpu_count()
    self._loadavg, self._busy, self._own, self._clock = loadavg, busy, own, clock
    self.samples = []
    self.record('start')

  def record(self, label: str) -> Sample:
    s = Sample(label, self._clock(), tuple(self._loadavg()), self._busy(), self._own())
    if self.samples:
      p = self.samples[-1]
      dt = s.wall - p.wall
      if s.busy is not None and p.busy is not None and dt > 0:
        s.others = max(0.0, (s.busy - p.busy) - (s.own - p.own)) / (dt * self.cpus)
    self.samples.append(s)
    return s

  def reasons(self) -> list:
    """Why the run counts as loaded ([] when quiet)."""
    out = []
    start = self.samples[0].loadavg[0]
    if start > START_LOAD_PER_CPU * self.cpus:
      out.append(f'1-min load {start:.2f} at start > {START_LOAD_PER_CPU} x {self.cpus} CPUs')
    later = self.samples[1:]
    shares = [s.others for s in later if s.others is not None]
    if shares and max(shares) > OTHERS_SHARE:
      out.append(f'other processes used up to {100 * max(shares):.0f}% of the CPUs '
                 f'(> {100 * OTHERS_SHARE:.0f}%)')
    if later and not shares:
      peak = max(s.loadavg[0] for s in later)
      if peak > LATER_LOAD_PER_CPU * self.cpus:
        out.append(f'1-min load up to {peak:.2f} > {LATER_LOAD_PER_CPU} x {self.cpus} CPUs')
    return out

  def loaded(self) -> bool:
    return bool(self.reasons())

  def span(self, since: int = 0) -> str:
    """Short summary of the samples from index ``since`` on: max 1-min load, max others' share."""
    xs = self.samples[since:]
    shares = [s.others for s in xs if s.others is not None]
    other = f', others <= {100 * max(shares):.0f}%' if shares else ''
    return f'load1 <= {max(s.loadavg[0] for s in xs):.2f}{other}'

  def report(self) -> str:
    """The lines to print under a table: the load at start / during / end, and the verdict."""
    first, last = self.samples[0], self.samples[-1]
    lines = [f'machine: {self.cpus} CPUs; 1/5/15-min load at start '
             f'{"/".join(f"{v:.2f}" for v in first.loadavg)}, at end '
             f'{"/".join(f"{v:.2f}" for v in last.loadavg)}; over {len(self.samples)} samples '
             f'{self.span()}']
    why = self.reasons()
    lines.append(f'LOADED -- do not quote ({"; ".join(why)})' if why else
                 'quiet (load within the thresholds of benchmarks/_load.py)')
    return '\n'.join(lines)


def add_flag(parser):
  parser.add_argument('--refuse_under_load', action='store_true',
                      help=f'exit with code {LOADED_EXIT_CODE} if the machine is loaded at the '
                           'start (before timing) or the finished run is flagged LOADED')


def refuse_at_start(monitor: LoadMonitor, refuse: bool):
  """With ``--refuse_under_load``, exits before any work if the start load is already over."""
  if refuse and monitor.loaded():
    print(f'refusing to benchmark: {"; ".join(monitor.reasons())}', file=sys.stderr)
    raise SystemExit(LOADED_EXIT_CODE)


def finish(monitor: LoadMonitor, refuse: bool) -> None:
  """Records the end sample, prints the report; exits non-zero when loaded and refusing."""
  monitor.record('end')
  print(monitor.report(), flush=True)
  if refuse and monitor.loaded():
    raise SystemExit(LOADED_EXIT_CODE)
