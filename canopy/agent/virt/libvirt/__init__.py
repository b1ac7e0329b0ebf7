"""The libvirt/QEMU driver, built from parts that each hold one idea:

    connection.Hypervisor   the libvirt connection: blocking calls in threads, domains, host facts, accelerator
    builder.GuestBuilder    a guest's files (root disk from the DiskBackend, config drive) and its domain XML
    builder.GuestTaps       the guests' tap devices (ethernet NICs)
    driver.LibvirtDriver    lifecycle, power, console, host info (the VirtDriver protocols)
    mobility.LibvirtMobility  resize, cold and live migration, snapshot, rebuild, rescue (`driver.mobility`)
    wiring                  an agent on libvirt: image client and cache, driver, reconciler

libvirt-python is imported through `canopy.optional.require_libvirt()` by the modules that call it, never by
this package's `__init__`: the fake driver and the all-in-one never import it.
"""
