"""Rendering and merging of cloud-init user-data, and the agent bundle it carries."""
