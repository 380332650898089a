"""config.train.recipe: 'shared' leaves a config alone, 'authors' writes each method's README
command for the setting (epochs, per-setting coefficients), in one place (recipes.apply via
config_lib.normalize); the configs' CMRF sma_start_step; the paper's numbers as transcribed."""
import json
import os

import numpy as np
import pytest

from configs import epic, hac
from mbcd_jax import config_lib, recipes
from mbcd_jax.study import experiments, paper_numbers
from mbcd_jax.baselines import moosa, simmmdg

MULTI = {'hac': {'human': ('animal', 'cartoon'), 'animal': ('human', 'cartoon'),
                 'cartoon': ('human', 'animal')},
         'epic': {'D1': ('D2', 'D3'), 'D2': ('D1', 'D3'), 'D3': ('D1', 'D2')}}


def _config(dataset, method, modalities, target, sources=None, recipe='authors'):
  c = (hac if dataset == 'hac' else epic).get_config()
  c.method.name = method
  c.data.modalities = modalities
  c.data.target = target
  c.data.sources = sources or MULTI[dataset][target]
  c.train.recipe = recipe
  return config_lib.normalize(c)


def test_shared_changes_nothing():
  for method in ('erm', 'mbcd', 'rna', 'simmmdg', 'moosa', 'cmrf', 'jat', 'nel', 'gmp'):
    c = _config('epic', method, ('video', 'flow', 'audio'), 'D1', recipe='shared')
    ref = epic.get_config()
    assert c.train.epochs == 20 and c.optim.weight_decay == ref.optim.weight_decay == 1e-4
    assert c.method.to_dict() == {**ref.method.to_dict(), 'name': method}


def test_mbcd_and_erm_authors_is_shared():
  for method in ('erm', 'ema', 'mbcd', 'mbcd_no_amd'):
    c = _config('hac', method, ('flow', 'audio'), 'human')
    ref = hac.get_config()
    assert c.train.epochs == 20 and c.method.to_dict() == {**ref.method.to_dict(),
                                                           'name': method}


def test_simmmdg_authors_recipes():
  c = _config('epic', 'simmmdg', ('video', 'flow', 'audio'), 'D1')
  assert (c.train.epochs, c.method.simmmdg.trans_hidden, c.method.simmmdg.alpha_trans) == (
      10, 1024, 0.1)
  c = _config('epic', 'simmmdg', ('audio', 'flow', 'video'), 'D3')   # any modality order
  assert (c.train.epochs, c.method.simmmdg.trans_hidden, c.method.simmmdg.alpha_trans) == (
      15, 2048, 1.0)
  assert _config('epic', 'simmmdg', ('video', 'audio'), 'D3').train.epochs == 25
  assert _config('hac', 'simmmdg', ('flow', 'audio'), 'cartoon').train.epochs == 20
  assert _config('hac', 'simmmdg', ('video', 'flow', 'audio'), 'animal').train.epochs == 10
  # every (dataset, modality set, target) of Table 1 has a command
  assert len(simmmdg.AUTHORS_RECIPES) == 2 * 4 * 3


def test_moosa_authors_recipes():
  c = _config('hac', 'moosa', ('video', 'flow', 'audio'), 'animal')
  m = c.method.moosa
  assert (c.train.epochs, m.mask_ratio, m.entropy_min_weight, m.jigsaw_num_splits,
          m.jigsaw_samples, m.alpha_trans) == (10, 0.7, 0.001, 2, 64, 0.1)
  c = _config('epic', 'moosa', ('video', 'audio'), 'D2')
  m = c.method.moosa
  assert (c.train.epochs, m.mask_ratio, m.entropy_min_weight, m.jigsaw_num_splits) == (
      10, 0.7, 1.0, 4)
  c = _config('hac', 'moosa', ('video', 'flow', 'audio'), 'cartoon')
  assert (c.train.epochs, c.method.moosa.alpha_trans) == (20, 0.5)


def test_jat_authors_recipe_is_the_scripts_defaults():
  # train_JAT.py: --nepochs 15, and its default 'adam' branch builds Adam without weight decay
  # (the docstring of mbcd_jax/baselines/jat.py); the same for every setting.
  for dataset, target, sources in (('hac', 'human', None), ('hac', 'animal', ('cartoon',)),
                                   ('epic', 'D2', None)):
    c = _config(dataset, 'jat', ('video', 'audio'), target, sources)
    assert (c.train.epochs, c.optim.weight_decay) == (15, 0.0)
    # the resolved number of sources: the domain terms only for the multi-source run
    hp = config_lib.validate(c).extension.hparams
    assert hp.num_sources == len(c.data.sources) == (1 if sources else 2)
    assert c.method.jat.to_dict() == {**hac.get_config().method.jat.to_dict()}
  c = _config('hac', 'jat', ('video', 'audio'), 'human')
  c.method.jat.num_sources = 3
  with pytest.raises(ValueError, match='num_sources=3 disagrees with the run'):
    config_lib.validate(c)


def test_gmp_authors_recipe_is_the_scripts_defaults():
  # train_GMP.py: --nepochs 15 and the same 'adam' branch without weight decay as train_JAT.py
  # (the docstring of mbcd_jax/baselines/gmp.py).
  for dataset, target, sources in (('hac', 'human', None), ('hac', 'animal', ('cartoon',)),
                                   ('epic', 'D2', None)):
    c = _config(dataset, 'gmp', ('video', 'flow', 'audio'), target, sources)
    assert (c.train.epochs, c.optim.weight_decay) == (15, 0.0)
    hp = config_lib.validate(c).extension.hparams
    assert hp.num_sources == len(c.data.sources) == (1 if sources else 2)


def test_nel_authors_recipe_is_the_scripts_epochs():
  # train_NEL.py: --nepochs 15, Adam with --weight_decay 1e-4 (the shared value)
  for dataset, target, sources in (('hac', 'cartoon', None), ('epic', 'D1', ('D3',))):
    c = _config(dataset, 'nel', ('video', 'flow', 'audio'), target, sources)
    assert (c.train.epochs, c.optim.weight_decay) == (15, 1e-4)


def test_cmrf_and_rna_are_per_dataset_and_allow_single_source():
  for target, sources in (('human', None), ('animal', ('cartoon',))):
    c = _config('hac', 'cmrf', ('video', 'flow', 'audio'), target, sources)
    assert (c.train.epochs, c.method.cmrf.sma_start_step) == (15, 100)
  c = _config('epic', 'cmrf', ('flow', 'audio'), 'D2', ('D1',))
  assert (c.train.epochs, c.method.cmrf.sma_start_step) == (15, 400)
  assert _config('epic', 'rna', ('video', 'audio'), 'D1', ('D3',)).train.epochs == 20


def test_unknown_setting_is_one_line_naming_it():
  with pytest.raises(ValueError) as e:
    _config('hac', 'simmmdg', ('video', 'flow', 'audio'), 'human', ('animal',))
  msg = str(e.value)
  assert '\n' not in msg and 'single-source' in msg
  assert 'dataset=hac' in msg and 'modalities=video+flow+audio' in msg and 'target=human' in msg
  with pytest.raises(ValueError, match=r'moosa has no authors.*dataset=epic, '
                                       r'modalities=video, .*target=D1'):
    _config('epic', 'moosa', ('video',), 'D1')
  with pytest.raises(ValueError, match='config.train.recipe must be one of'):
    _config('hac', 'mbcd', ('video', 'audio'), 'human', recipe='paper')


def test_apply_is_idempotent_and_what_the_runner_records(tmp_path):
  c = _config('hac', 'moosa', ('video', 'flow', 'audio'), 'cartoon')
  again = config_lib.normalize(c)
  assert again.to_dict() == c.to_dict()
  # A study whose base is a plug-in under 'authors': each run resolves its own recipe, so the
  # erm runs keep the config's epochs (no leak from the base's method).
  base = hac.get_config('smoke')
  base.method.name = 'simmmdg'
  base.train.recipe = 'authors'
  base = config_lib.normalize(base, recipe=False)
  runs = experiments.plan(str(tmp_path), base,
                          variant_list=experiments.variants('table1', ['erm', 'simmmdg']),
                          modality_sets=[('flow', 'audio')], seeds=(0,), targets=['cartoon'],
                          modalities_first=True)
  seen = {}

  def record(config, workdir):
    seen[config.method.name] = config.train.epochs
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump({}, f)
  experiments.run_all(base, runs, train_fn=record, log=lambda s: None)
  assert seen == {'erm': 1, 'simmmdg': 20}
  assert [os.path.relpath(r.run_dir, tmp_path).split(os.sep)[0] for r in runs] == [
      'erm', 'simmmdg__recipe=authors']
  cfg = json.load(open(os.path.join(runs[1].run_dir, 'run_config.json')))
  assert (cfg['train']['epochs'], cfg['train']['recipe']) == (20, 'authors')


def test_configs_sma_start_step():
  assert hac.get_config().method.cmrf.sma_start_step == 100
  assert epic.get_config().method.cmrf.sma_start_step == 400
  for mod in (hac, epic):
    for arg, want in (('synthetic', 200), ('synthetic,short', 40), ('synthetic,scratch', 40)):
      c = config_lib.normalize(mod.get_config(arg))
      assert c.method.cmrf.sma_start_step == want, arg
      # 10% of the synthetic run: 2 sources x 160 examples / batch 16 x 100 epochs = 2000
      # steps (20 epochs, 400 steps: short and scratch)
      steps = 2 * c.data.synthetic.train_per_domain // c.data.batch_size * c.train.epochs
      assert c.method.cmrf.sma_start_step == steps // 10, arg
    short = config_lib.normalize(mod.get_config('synthetic,short'))
    assert (short.train.epochs, short.method.ema_beta) == (20, 1.0 - 2.0 / 400)
    full = config_lib.normalize(mod.get_config('synthetic'))
    # The value the configs computed before beta was resolved after the overrides, bit for bit.
    assert (full.train.epochs, full.method.ema_beta) == (100, 1.0 - 2.0 / (100 * 20))


def test_settings_relative_to_the_run_length_follow_the_command_line():
  """--config.train.epochs / data.batch_size change the run's steps: beta keeps the run /
  horizon ratio and CMRF's SMA starts at 10% of the new run; a value set explicitly stays."""
  def resolved(*flags):
    c = hac.get_config('synthetic')
    for flag in flags:
      key, value = flag.split('=')
      *path, last = key.split('.')
      group = c
      for p in path:
        group = group[p]
      group[last] = type(group[last])(value) if group[last] is not None else float(value)
    return config_lib.normalize(c)
  c = resolved('train.epochs=50')             # 1000 steps
  assert (c.method.ema_beta, c.method.cmrf.sma_start_step) == (1.0 - 2.0 / 1000, 100)
  c = resolved('data.batch_size=32')          # 10 steps per epoch, 1000 steps
  assert (c.method.ema_beta, c.method.cmrf.sma_start_step) == (1.0 - 2.0 / 1000, 100)
  c = resolved('train.epochs=50', 'method.ema_beta=0.98')
  assert (c.method.ema_beta, c.method.cmrf.sma_start_step) == (0.98, 100)
  # Prepared data has no size in the config: there the setting must be given, and validation
  # names it.
  c = hac.get_config()
  c.method.ema_beta, c.method.ema_horizon_ratio = None, 2.0
  with pytest.raises(ValueError, match='config.method.ema_beta is not set'):
    config_lib.validate(config_lib.normalize(c))


def test_the_steps_per_epoch_of_the_config_are_the_loaders():
  from mbcd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  for arg in ('synthetic', 'smoke'):
    c = config_lib.normalize(hac.get_config(arg))
    assert config_lib.steps_per_epoch(c.data) == input_pipeline.make_loader(c, 'train').num_batches


def test_modality_key():
  assert recipes.modality_key(('audio', 'video')) == 'video+audio'
  assert recipes.modality_key(['audio', 'flow']) == 'flow+audio'
  assert moosa.authors_recipe('hac', ('flow', 'audio'), 'cartoon')['mask_ratio'] == 0.7


def test_paper_numbers_transcription():
  for table, n in ((paper_numbers.TABLE1, 3), (paper_numbers.TABLE2, 6)):
    for key, (*cells, avg) in table.items():
      assert len(cells) == n, key
      # the printed average is the mean of the printed per-target means (to rounding)
      assert abs(np.mean([m for m, _ in cells]) - avg) <= 0.011, key
  assert len(paper_numbers.TABLE1) == 2 * 4 * 6 and len(paper_numbers.TABLE2) == 2 * 6
  # the averages quoted in the paper's text and summary
  for mods, method, e, h in (('V+F+A', 'ERM', 50.55, 62.87), ('V+F+A', 'SimMMDG', 63.34, 67.44),
                             ('V+F+A', 'CMRF', 65.47, 70.64), ('V+F+A', 'MBCD', 67.58, 71.62),
                             ('F+A', 'ERM', 56.47, 52.31), ('F+A', 'CMRF', 61.84, 57.74),
                             ('F+A', 'MBCD', 63.08, 59.48)):
    assert paper_numbers.TABLE1[('epic', mods, method)][-1] == e
    assert paper_numbers.TABLE1[('hac', mods, method)][-1] == h
  for method, e, h in (('CMRF', 59.51, 61.51), ('MBCD', 60.36, 64.48)):
    assert paper_numbers.lookup('single_source', 'epic', 'V+F+A', method)['Avg'][0] == e
    assert paper_numbers.lookup('single_source', 'hac', 'V+F+A', method)['Avg'][0] == h
  row = paper_numbers.lookup('multi_source', 'hac', 'A+F', 'mbcd')   # any letter order
  assert row['A,C→H'] == (63.76, 0.91) and row['H,A→C'] == (49.05, 0.19)
  assert paper_numbers.lookup('multi_source', 'hac', 'V+F+A', 'ema') is None
