"""liaotian: the front door (CLI, config, cluster connection, demo)."""
__version__ = "0.1.0"
