"""Data delivery through API, file export and sandbox queries, with metering."""
