"""Images: their records in the global database and their data in the local image store folder."""
