"""The host's network: the flow compiler, its tables, and the Open vSwitch applier."""
