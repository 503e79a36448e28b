"""Evaluations: bits per byte, CORE (base models) and chat evaluations (ChatCORE)."""
