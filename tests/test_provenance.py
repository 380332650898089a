"""Provenance: the machine and library versions a run records beside its result."""
import jax
import optax

from mbcd_jax import provenance
from mbcd_jax.study import tables


def test_cpu_reads_the_model_and_the_widest_vector_isa(tmp_path):
  intel = tmp_path / 'intel'
  intel.write_text('processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum\n'
                   'flags\t\t: fpu sse4_2 avx avx2 avx512f avx512bw\n\n'
                   'processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum\n')
  amd = tmp_path / 'amd'
  amd.write_text('model name\t: AMD EPYC 7B13\nflags\t\t: sse4_2 avx fma avx2\n')
  arm = tmp_path / 'arm'
  arm.write_text('processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU part\t: 0xd0c\n')
  assert provenance.cpu(str(intel)) == {'model': 'Intel(R) Xeon(R) Platinum', 'isa': 'avx512f'}
  assert provenance.cpu(str(amd)) == {'model': 'AMD EPYC 7B13', 'isa': 'avx2'}
  assert provenance.cpu(str(arm))['isa'] == 'asimd'
  assert provenance.cpu(str(tmp_path / 'missing'))['isa'] == ''


def test_environment_records_the_running_libraries_and_labels_a_machine():
  env = provenance.environment()
  assert env['libraries']['jax'] == jax.__version__
  assert env['libraries']['optax'] == optax.__version__
  assert env['platform'] == jax.devices()[0].platform
  label = tables.machine_label(env)
  assert label.endswith(f'/jax {jax.__version__}') and env['cpu']['model'] in label
  assert tables.machine_label(None) == ''


def test_an_xla_isa_cap_is_recorded_and_shown_in_the_machine_label(monkeypatch):
  # The cap changes the weights (measured: AVX2 vs SSE4_2 pretraining on one machine), so a run
  # made under it must be told apart from one on the same CPU without it.
  assert provenance.xla_isa_cap('') == ''
  assert provenance.xla_isa_cap('--xla_force_host_platform_device_count=8') == ''
  assert provenance.xla_isa_cap('--xla_cpu_max_isa=AVX2 --xla_force_host_platform_device_count=8'
                                ' --xla_cpu_max_isa=SSE4_2') == 'SSE4_2'
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_max_isa=AVX2')
  env = provenance.environment()
  assert env['xla_flags'] == '--xla_cpu_max_isa=AVX2'
  env['cpu'] = {'model': 'Intel Xeon', 'isa': 'avx512f'}
  assert tables.machine_label(env) == f'Intel Xeon/avx512f<=AVX2/jax {jax.__version__}'
  del env['xla_flags']   # runs recorded before the field existed
  assert tables.machine_label(env) == f'Intel Xeon/avx512f/jax {jax.__version__}'
