"""Retriever's benchmark harness: `python -m bench` runs B1-B6 in one run and writes bench/results/.

Modules: `run` (the command), `app` (the app under test, started like a user starts it), `load` (the
load generator, run as a separate process), `baselines` (the bare, in-process baselines, also run as a
separate process), `tutorial` (the Ray Serve tutorial's design re-created on our model, for B3),
`report` (JSON, Markdown table, plots), `stats` (percentiles and process memory).
"""
