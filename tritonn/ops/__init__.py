"""Autograd Functions and the launchers behind :mod:`tritonn.functional`, one op per file."""
