"""Steering vectors: extracted from preference pairs, composed per user, stored, described by a card."""
