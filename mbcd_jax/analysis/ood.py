"""Out-of-distribution sets for the OOD-detection suite (the MMDG benchmark's
``test_HAC_ood.py``: in-distribution = the HAC target domain, OOD = EPIC D1 test clips).

In-distribution is always the evaluated model's own test split (its unseen target domain).
OOD is:

  real data          a prepared store of the *other* dataset (EPIC for HAC models, HAC for EPIC
                     models; ``--ood_dir``), its domains' test splits (EPIC: D1 as the
                     benchmark; HAC: all three), read through the evaluated model's eval
                     transform (its frames, crop, spectrogram; the OOD dataset's own rule for
                     where the audio window lies).
  embedded benchmark ``SyntheticOODSource``: the target domain's examples, in its style, of
                     ``num_classes`` classes that no world has: their patterns come from seeds
                     ``[world_seed, modality, 2]`` / ``[world_seed, modality, 3, domain]`` (worlds
                     use tags 0 and 1) and each example's noise from an index past the end of
                     every split. A semantic shift only, so a harder test than EPIC vs HAC.
"""
import numpy as np

from mbcd_jax.data import synthetic
from mbcd_jax.analysis import common
from mbcd_jax.data import epic, hac, pipeline, store

OOD_SHARED_TAG, OOD_SPECIFIC_TAG = 2, 3
OOD_INDEX_OFFSET = 1 << 30   # example indices no split reaches
DEFAULT_OOD_DOMAINS = {'epic': ('D1',), 'hac': hac.DOMAINS}


class SyntheticOODSource(synthetic.SyntheticSource):
  """The ``domain``'s train + test examples of the embedded benchmark with every class pattern
  (shared and domain-specific) replaced by one of a class no world has (module docstring)."""

  def __init__(self, spec: synthetic.SyntheticSpec, domain: str, modalities):
    super().__init__(spec, (domain,), 'all', modalities)
    world = self._world
    d = spec.domains.index(domain)
    for m in self.modalities:
      mid = synthetic._MODALITY_IDS[m]   # pylint: disable=protected-access
      shape = spec.shape(m)
      rng = np.random.default_rng([spec.world_seed, mid, OOD_SHARED_TAG])
      world.shared[m] = np.stack([synthetic._class_pattern(rng, shape)   # pylint: disable=protected-access
                                  for _ in range(spec.num_classes)])
      rng = np.random.default_rng([spec.world_seed, mid, OOD_SPECIFIC_TAG, d])
      world.specific[m, d] = np.stack([synthetic._class_pattern(rng, shape)   # pylint: disable=protected-access
                                       for _ in range(spec.num_classes)])
    self._items = [(dom, s, OOD_INDEX_OFFSET + i) for dom, s, i in self._items]


def synthetic_ood(trained: common.Trained) -> tuple[str, object, None]:
  """(name, source, None): the embedded benchmark's OOD set for ``trained``'s target."""
  from mbcd_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  d = trained.config.data
  src = SyntheticOODSource(input_pipeline.synthetic_spec(trained.config), d.target, d.modalities)
  return 'new_classes', src, None


def prepared_ood(trained: common.Trained, ood_dir: str, domains=None) -> tuple[str, object, object]:
  """(name, source, transform): the test splits of ``domains`` of the store at ``ood_dir``,
  with the evaluated model's eval transform for that dataset."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  with open(f'{ood_dir}/{store.INDEX}') as f:
    import json  # pylint: disable=g-import-not-at-top
    dataset = json.load(f).get('dataset')
  if dataset not in DEFAULT_OOD_DOMAINS:
    raise ValueError(f'{ood_dir}: not a prepared EPIC or HAC store (dataset {dataset!r})')
  index = store.load_index(ood_dir, dataset)
  domains = tuple(domains or DEFAULT_OOD_DOMAINS[dataset])
  known = epic.DOMAINS if dataset == 'epic' else hac.DOMAINS
  for dom in domains:
    if dom not in known:
      raise ValueError(f'OOD domain {dom!r} is not a {dataset} domain ({", ".join(known)})')
  mods = tuple(trained.config.data.modalities)
  entries = [e for e in index['entries'] if e['domain'] in domains and e['split'] == 'test']
  if not entries:
    raise ValueError(f'{ood_dir}: no prepared test clips of {domains}')
  src = pipeline.PreparedSource(ood_dir, entries, mods)
  data = ml_collections.ConfigDict(trained.config.data.to_dict())
  data.dataset = dataset
  return f'{dataset}:{"+".join(domains)}', src, pipeline.make_transform(data, train=False)
