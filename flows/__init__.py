"""Prefect flows: run the DVC pipeline stage by stage, and its deployments.

Flows drive DVC (``dvc repro --single-item``); they never re-implement the DAG and keep
Prefect's result caching off (DVC owns caching).
"""
