"""Virt drivers: what an agent uses to run guests.

    base.py            the small protocols (HostDriver, GuestLifecycle, PowerControl, PauseControl,
                       ConsoleReader → VirtDriver; ColdMigration, LiveMigration, Snapshots, RescueRebuild →
                       Mobility, carried as `driver.mobility` by a MobileDriver)
    fake.py            the simulated hypervisor (tests, simulator, all-in-one); fake_mobility.py its mobility
    libvirt/           the libvirt/QEMU driver (imports libvirt-python; nothing else here does)

The same contract tests run against every driver: tests/contract/virt.py.
"""
