"""Sensor streams signed at the source: hash-chained chunks, seals, a logged root; EDF+/BDF, LSL."""
