"""Label Studio connector (tasks, pre-annotations, annotations) and a local server manager."""
