"""Synthetic mail-flow and DNS resolver logs with labelled incidents and decoys (``truth.json``)."""

from .generator import GenerateSummary, generate, without_late_lines
from .scenarios import SCENARIOS, Event, Scenario

__all__ = ["SCENARIOS", "Event", "GenerateSummary", "Scenario", "generate", "without_late_lines"]
