"""storybridge reference runner. Talks to workers only through the contract; never imports torch."""

__version__ = "0.1.0"
