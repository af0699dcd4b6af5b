"""DVC stages: one thin module per stage (``python3 -m stages.<name>``).

Each reads its own section of ``params.yaml``, calls the library, writes its outputs
atomically and logs to MLflow through :mod:`scalewise.project.tracking`.
"""
