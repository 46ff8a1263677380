"""Gin configs shipped with jaxlab (resolvable as package resources by gin includes)."""
