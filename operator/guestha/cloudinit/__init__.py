"""Rendering and merging of cloud-init user-data: the agent bundle it carries (bundle) and
the recipe that installs the agent in a guest (recipe)."""
