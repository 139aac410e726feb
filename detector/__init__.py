"""Detector package."""
