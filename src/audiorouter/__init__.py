"""audiorouter: one self-hostable API for speech-to-text, text-to-speech and translation."""

__version__ = "0.1.0"
