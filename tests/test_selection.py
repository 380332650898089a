"""Model selection by the authors' rule: best validation accuracy, the later epoch on ties."""
from mbcd_jax import train


def _select(vals):
  best = {'val': -1.0}
  for epoch, v in enumerate(vals, start=1):
    best = train.select_best(best, {'val': v, 'epoch': epoch, 'test': {'fused': 10.0 * epoch}})
  return best


def test_later_epoch_wins_a_tie():
  # 80 first at epoch 2, again at 3 and 5; the later maximum is kept with its own test record.
  best = _select([50.0, 80.0, 80.0, 70.0, 80.0, 60.0])
  assert best['epoch'] == 5 and best['test'] == {'fused': 50.0}


def test_a_strictly_higher_epoch_replaces_earlier_ties():
  assert _select([90.0, 90.0, 95.0, 90.0])['epoch'] == 3


def test_a_plateau_to_the_end_selects_the_last_epoch():
  # The embedded benchmark's ERM: 100% from epoch 3 on -> the last epoch, as the scripts do.
  assert _select([60.0, 90.0, 100.0, 100.0, 100.0])['epoch'] == 5


def test_first_eval_replaces_the_empty_record_and_lower_never_does():
  assert _select([0.0])['epoch'] == 1
  assert _select([40.0, 39.9, 0.0])['epoch'] == 1


def test_about_ten_eval_lines_are_printed_and_always_the_last():
  lines = lambda n: [e for e in range(1, n + 1) if train.printed_epoch(e, n)]
  assert lines(100) == list(range(10, 101, 10))
  assert lines(2) == [1, 2]
  assert lines(15) == [2, 4, 6, 8, 10, 12, 14, 15]
  assert all(len(lines(n)) <= 11 and lines(n)[-1] == n for n in range(1, 300))
