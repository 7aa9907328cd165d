"""Every use of a private Lightning or litdata name, fenced in one place.

Each function or class here names the version it was checked against; tests/_compat/ fails with a clear
message when an upgrade removes or changes what it relies on. Nothing outside this package may touch a
private name of lightning or litdata (tests/test_architecture.py checks it).
"""
