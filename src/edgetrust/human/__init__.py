"""The human verification layer: passkey reviewers, review tasks, attestations, aggregation."""
