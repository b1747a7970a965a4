"""The human verification layer: reviewers with passkeys, review tasks, attestations, aggregation."""
