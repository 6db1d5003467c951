"""Kafka plumbing shared by every part: the embedded broker, clients, topic admin and true offsets."""
