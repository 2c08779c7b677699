"""Venue-side encoding: fixed, closed GOPs with libx264 + AAC, for the test pattern and --normalize."""
