"""The run configuration: schema, range checks, presets."""
