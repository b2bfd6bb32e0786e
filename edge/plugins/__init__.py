"""Device plugins: the manifest and points models and the loader of a plugin folder."""
