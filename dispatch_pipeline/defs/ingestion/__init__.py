"""Inputs of a plan per site-day: the load/PV forecast and the prices."""
