"""Activation pairs: closed forms, generic construction, stable interval, registry."""
