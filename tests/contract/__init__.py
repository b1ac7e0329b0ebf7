"""Contract suites: one set of behavioural tests that every implementation of a driver protocol passes."""
