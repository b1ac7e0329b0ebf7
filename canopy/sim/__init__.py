"""The scale simulator: the real control plane as separate processes against thousands of real agents
(fake driver, fake switch) on a real bus, driven through the public API; see README.md here."""
