"""Cyntra: a local-first kernel that dispatches work items to agent toolchains, and its decision engine."""

__version__ = "0.1.0"
