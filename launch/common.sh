# Shared by the launch scripts (sourced). DRY_RUN=1: print each command instead of running it.
# shellcheck shell=bash
DRY_RUN="${DRY_RUN:-0}"

# run CMD...: runs a command, or prints it (shell-quoted, one line) under DRY_RUN=1.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# The exit codes of `python -m mbcd_jax.main` (mbcd_jax/main.py).
EXIT_CONFIG=2       # config / data / workdir / checkpoint mistake: do not retry
EXIT_NONFINITE=3    # non-finite loss (nan_policy=stop): do not retry
EXIT_PREEMPTED=75   # SIGTERM: a checkpoint was saved; the same command resumes
