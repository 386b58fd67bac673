"""Training engine: recipes of stages, freezing, loss weighting, Lightning module, checkpoints.

Kept import-light (the config schema imports `drivemtl.engine.config`); import Lightning-based
parts from their modules, e.g. `from drivemtl.engine.trainer import run_recipe`.
"""
