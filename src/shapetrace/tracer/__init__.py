"""Capture: hooks, functional ops and values of a live forward, turned into plain ``records``."""
