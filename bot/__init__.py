"""mm lifecycle review bot: reviews Linux mm patch series for object-lifecycle bugs."""

__version__ = "0.1.0"
