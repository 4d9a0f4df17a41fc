#!/usr/bin/env bash
# `make test`: the suite in two steps. The quick tests (`-m "not slow"`: none starts a process or takes seconds)
# run on two pytest-xdist processes, each with a database (copied from one migrated template:
# conftest.django_db_setup) and Redis databases of its own (portal/settings_test.py); then the slow ones
# (browser, worker, fault and topology tests) in one process, as they time real worker processes and must not
# share the machine's two cores with a second test run. Arguments go to pytest in both steps; arguments that
# choose the markers themselves (-m) run once, as given (on two processes for "not slow").
set -uo pipefail
python=${PYTHON:-.venv/bin/python}

for arg in "$@"; do
  if [[ $arg == -m* ]]; then
    if [[ " $* " == *"not slow"* ]]; then
      exec "$python" -m pytest -n 2 "$@"
    fi
    exec "$python" -m pytest "$@"
  fi
done

"$python" -m pytest -n 2 -m "not slow" "$@"
quick=$?
"$python" -m pytest -m slow "$@"
slow=$?
# pytest's 5 is "no test collected": the arguments chose tests of one kind only.
if [[ $quick == 5 && $slow == 5 ]]; then
  exit 5
fi
for code in $quick $slow; do
  if [[ $code != 0 && $code != 5 ]]; then
    exit "$code"
  fi
done
exit 0
