"""Admission control: which generations run now, which wait, which are refused."""
