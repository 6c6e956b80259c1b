"""Python imports `sitecustomize` at start-up from the path: the test app's Ray workers have this folder
first on PYTHONPATH (tests/conftest.py), so the loopback-only guard is in place before any of their code
runs. (Ray's `worker_process_setup_hook` is honoured only in a job's runtime_env, not an application's.)"""

from tests import netguard

netguard.install()
