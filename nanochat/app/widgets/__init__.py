"""Widgets of the dashboard that more than one screen uses."""
