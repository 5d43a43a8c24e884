"""The model file: its safe format, and the checks that a model read from disk is whole and consistent."""
