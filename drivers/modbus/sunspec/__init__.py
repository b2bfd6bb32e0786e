"""SunSpec devices from the official model definitions (the ``pysunspec2`` package ships them).

``plugin: sunspec`` on a device: the appliance finds the "SunS" marker (at 40000, 0 or 50000),
walks the model chain by ID and length (:mod:`.discovery`) and builds every point of every
known model from its definition (:mod:`.models`): types, units, scale-factor registers,
"not implemented" sentinels, enumerations, bit fields and repeating groups. Models the
definitions do not know are skipped and reported. :mod:`.sim` serves a simulated SunSpec
device built from the same definitions.
"""
