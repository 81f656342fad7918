"""Telemetry from the SDK: evaluation counts and the state bag's economics per configuration
cohort, sent in small batches to ``POST /api/v1/telemetry`` (wire format v1).

Loaded only when telemetry is on and first used: a client with ``telemetry=False``, or a
process with ``ANALEMMA_TELEMETRY=false``, never imports this package.

* ``hll.Sketch``: the HyperLogLog sketch of unit ids the wire format defines (p = 8; version 2
  takes a unit's bucketing hash, which the flag's tally fills as it evaluates: ``flags.tally``).
* ``recorder.Recorder``: the bounded in-memory counts; ``snapshot_and_reset()`` is a batch (it
  takes the compiled flags' tallies and counts what was logged).
* ``wire``: the wire format's limits, and how a batch's parts are written.
* ``sender.Telemetry``: a recorder and its batches' way to the service (``flush``).
* ``hydration.HydratorTelemetry``: what a hydrator counts, per cohort.
"""
