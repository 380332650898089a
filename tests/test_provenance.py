"""Provenance: the machine and library versions a run records beside its result."""
import jax
import optax

from mbcd_jax import provenance, tables


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
