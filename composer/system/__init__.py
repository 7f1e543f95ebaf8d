"""OS configuration inside a tree: accounts, login shells, OpenRC services.

Not part of the package format: apk/ replays package scripts with these, and the
build applies the profile's ``accounts:`` and ``services:`` with them.
"""
