"""radsync: one truth between RIS and PACS."""

__version__ = "0.1.0"
