"""The configs of a clone: ``--config=configs/<name>.py[:arg]``. Each file re-exports the
module of ``mbcd_jax/configs/`` (where the keys are set) so that the command lines and
``from configs import hac`` work from the repository root; the package installs only
``mbcd_jax.configs``."""
