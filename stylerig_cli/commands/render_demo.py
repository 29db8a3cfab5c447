"""``stylerig render-demo``."""
