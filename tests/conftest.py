"""Shared fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.influx",
    "tests.fixtures.sshd",
    "tests.fixtures.rabbitmq",
    "tests.fixtures.ceph",
    "tests.fixtures.chromium",
]
