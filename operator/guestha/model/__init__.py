"""Typed views of guestha's custom resources and state enums (standard library only)."""
