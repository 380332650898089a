"""The embedded benchmark's default world satisfies its stated principle (data statistics)."""
import dataclasses

from configs import hac
from mbcd_jax import input_pipeline
from mbcd_jax.synthetic import world_check


def _spec(arg):
  spec = input_pipeline.synthetic_spec(hac.get_config(arg))
  # Fewer examples per domain keep the test fast; the statistics are per-domain percentiles.
  return dataclasses.replace(spec, train_per_domain=80, test_per_domain=24)


def test_default_world_satisfies_the_principle():
  report = world_check.check(_spec('synthetic'))
  assert report.ok, '\n'.join(report.lines)
  assert report.lines[-1] == 'principle: HOLDS'


def test_fixed_styles_put_targets_outside_the_sources_span():
  # The earlier benchmark (one style per domain): the check must be able to fail.
  report = world_check.check(_spec('synthetic,scratch'))
  assert not report.ok
  assert any('outside the sources' in f for f in report.failures)
  assert not any('no domain shift' in f for f in report.failures)


def test_balanced_world_fails_the_imbalance_condition():
  spec = dataclasses.replace(_spec('synthetic'), dominance=1.0, dominant_specific=0.1)
  report = world_check.check(spec)
  assert any(f.startswith('dominant video') for f in report.failures), report.failures


def test_stats_agree_with_the_report_and_the_verdicts():
  report = world_check.check(_spec('synthetic'))
  s = report.stats
  assert s['dominant'] == 'video'
  for m in ('video', 'flow', 'audio'):
    # The printed line carries the same numbers (3 decimals).
    line = [l for l in report.lines if l.strip().startswith(f'{m} ') and 'separability' in l][0]
    assert f'separability {s[f"separability/{m}"]:.3f}' in line
    assert f'agreement {s[f"agreement/{m}"]:.3f}' in line
    # HOLDS: every target inside the widened span (margin <= tol) and shift >= min_shift.
    assert s[f'span_margin/{m}'] <= 0.10 and s[f'shift/{m}'] >= 0.5
  assert s['separability/video'] > max(s['separability/flow'], s['separability/audio'])
  bad = world_check.check(_spec('synthetic,scratch'))
  assert max(bad.stats[f'span_margin/{m}'] for m in ('video', 'flow', 'audio')) > 0.10
