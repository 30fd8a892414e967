"""Training, evaluation, prediction, comparison and export: segkit's data, models, losses and metrics composed into runs.

One module per job; the functions are `segkit.train`, `segkit.evaluate`, `segkit.predict`,
`segkit.compare` and `segkit.export` (each defined in the module of the same name here).
"""
