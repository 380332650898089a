"""The one exception type for the user's mistakes.

``ConfigError``: something the user gave is wrong — a config key or value, a data folder, a
workdir, a checkpoint, a weights file. Its message is one line naming the key, file or shape at
fault; ``python -m mbcd_jax.main`` prints it and exits with code 2, without a traceback.
Anything else (an error inside this library, JAX's own ``ValueError``) keeps its traceback.
It subclasses ``ValueError`` so that callers catching ``ValueError`` keep working.
"""


class ConfigError(ValueError):
  """A mistake in the user's config, data, workdir or files (one line)."""
