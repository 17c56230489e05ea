"""The kafka-lfs-relay application: the command line, the config file, the wiring, ``check``, the demo and the sandbox.

It is the only package that imports ``targets`` and ``filters``; the relay core (``relay``)
knows neither. See ``docs/architecture.md``.
"""
