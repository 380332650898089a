"""Where a run's scalars go: ``metrics.jsonl`` (one JSON object per event) and TensorBoard.

A resumed run first truncates ``metrics.jsonl`` to the checkpoint's step (``truncate_jsonl``):
rows written after it by the run that was killed are recomputed, so the file ends up equal to
an uninterrupted run's.
"""
import json
import os

from absl import logging


def truncate_jsonl(path: str, last_step: int) -> int:
  """Keeps the rows of ``path`` with ``step <= last_step`` (atomically). Returns rows dropped.

  A torn last line (a kill mid-write) is dropped too."""
  if not os.path.exists(path):
    return 0
  keep, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
        ok = line.endswith('\n') and int(row['step']) <= last_step
      except (ValueError, KeyError, TypeError):
        ok = False
      if ok:
        keep.append(line)
      else:
        dropped += 1
  if dropped:
    with open(path + '.tmp', 'w') as f:
      f.writelines(keep)
    os.replace(path + '.tmp', path)
    logging.info('%s: dropped %d rows after step %d (recomputed by the resumed run)',
                 path, dropped, last_step)
  return dropped


class MetricWriter:
  """JSON lines + TensorBoard scalars, written by process 0 only."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    """``resume_step``: the step the run (re)starts from. Rows after it were written by a run
    that was killed before its next checkpoint; the resumed run recomputes them, so they are
    dropped (the file then equals an uninterrupted run's, and TensorBoard purges them too)."""
    self.enabled = enabled
    self._jsonl = self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, 'metrics.jsonl')
      truncate_jsonl(path, resume_step)
      self._jsonl = open(path, 'a')
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(workdir, purge_step=resume_step + 1)
      except ImportError:  # TensorBoard output is optional
        self._tb = None

  def write(self, step: int, kind: str, scalars: dict):
    """One event: ``{'step', 'kind', **scalars}`` (values as floats)."""
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': int(step), 'kind': kind,
                                  **{k: float(v) for k, v in scalars.items()}}) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f'{kind}/{k}', float(v), int(step))

  def close(self):
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()
