"""Attention analysis: getting attention, maps, the HTML viewer, corpus statistics."""
