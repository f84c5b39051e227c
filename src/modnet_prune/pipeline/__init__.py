"""The end-to-end pipeline: recipe -> prune -> recalibrate -> fine-tune -> evaluate ->
export -> benchmark -> report. Imports every lower layer; nothing imports it but the CLI."""
from .recipe import Recipe, RecipeError, load_recipe, recipe_from_dict

__all__ = ["Recipe", "RecipeError", "load_recipe", "recipe_from_dict"]
