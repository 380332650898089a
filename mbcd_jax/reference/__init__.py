"""PyTorch twins of the Flax code, used only by tests/ and benchmarks/ to compare outputs and
timings: encoders_torch.py (the paper's encoders). torch is a dev-only dependency
(requirements-dev.txt): these modules import it at the top, so nothing in the rest of the
package may import them (tests/test_layout.py checks it)."""
