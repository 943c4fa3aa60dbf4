"""Shipped schedules (package data)."""
