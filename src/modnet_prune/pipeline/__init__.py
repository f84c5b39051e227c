"""The end-to-end pipeline: recipe -> prune -> recalibrate -> fine-tune -> evaluate ->
export -> benchmark -> report. Imports every lower layer; nothing imports it but the CLI
and the benchmarks."""
from .recipe import Recipe, RecipeError, load_recipe, recipe_from_dict
from .run import STAGES, PipelineStopped, run_pipeline

__all__ = ["PipelineStopped", "Recipe", "RecipeError", "STAGES", "load_recipe",
           "recipe_from_dict", "run_pipeline"]
