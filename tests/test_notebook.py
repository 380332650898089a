"""notebooks/ablations.ipynb runs end to end (tiny grid on the :smoke config).

No wall-time assertion: timings belong in benchmarks/, and a shared CI machine would make it
flaky. The tiny grid takes about a minute on an idle 2-core machine."""
import os

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ablations_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv('MBCD_NOTEBOOK_TINY', '1')
  monkeypatch.setenv('MBCD_NOTEBOOK_WORKDIR', str(tmp_path / 'tiny'))
  monkeypatch.setenv('MBCD_ROOT', ROOT)
  nb = nbformat.read(os.path.join(ROOT, 'notebooks', 'ablations.ipynb'), as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': os.path.join(ROOT, 'notebooks')}}
                          ).execute()
  outputs = '\n'.join(str(o.get('text', '')) + str(o.get('data', {}).get('text/markdown', ''))
                      for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
  assert 'trained 2 runs' in outputs and 'failed: []' in outputs
  assert '| V+F+A | mbcd |' in outputs
  assert os.path.exists(tmp_path / 'tiny' / 'notebook_plots' / 'curves.png')
