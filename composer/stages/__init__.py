"""The build, stage by stage, in the order data flows.

validate → plan (release, repositories, keys, resolved packages, epoch) → compose
(base tree + install + system config + overlay) → outputs (one registry of kinds)
→ record (inputs and the manifest). Each stage takes values and returns frozen
values; :mod:`composer.stages.pipeline` threads them. Nothing is imported here, so
``import composer.stages.x`` stays cheap.
"""
