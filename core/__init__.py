"""The vocabulary every layer shares: channels, input roles, channel groups, patch
features and indices, errors.  Imports nothing of ours, so engine, models and training
all sit above it."""
