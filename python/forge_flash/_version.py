"""The one place the version lives: both pyprojects and the plugin's version check read it."""

__version__ = "0.1.0"
