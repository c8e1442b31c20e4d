"""Inspection: proposals and segments of a few images, statistics and evaluation against annotations."""
