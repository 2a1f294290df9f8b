"""Built-in fio profiles: data files (NAME.yaml) read by `loadgen.plan.load_profile`.

A package, so the files ship as package data and are found with importlib.resources.
"""
