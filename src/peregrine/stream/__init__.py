"""The stream face: event pipelines on NATS JetStream (see ``service``)."""
